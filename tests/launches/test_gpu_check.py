"""`bench/gpu_check.py --smoke` as a script on CPU: every section of its results is there (no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path


BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_gpu_check_smoke_writes_json_to_out(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    completed = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--smoke"], env=env,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert {"matmul", "train", "mfu", "generation", "verdicts"} <= set(results)
    for entry in results["mfu"].values():
        assert entry["achieved_tflops"] > 0 and 0 < entry["mfu_nominal_989"] < 1
    assert "MFU" in completed.stdout
    # the layouts side by side with DPO-as-SPIN; on CPU "flex" falls back to the dense mask (no backward there)
    contenders = results["train"]["contenders"]
    assert set(contenders) == {"tspin_stacked", "tspin", "tspin_flex", "tspin_flex_gc", "dpo_spin"}
    assert contenders["tspin_stacked"]["packed_attention"] is None and contenders["tspin_flex"]["packed_attention"]
    assert contenders["tspin_flex_gc"]["gradient_checkpointing"] and contenders["tspin"]["memory"]["peak_bytes"] > 0
    for agreement in results["train"]["logps_agreement"].values():
        assert agreement["max_abs_difference"] < 1e-3 * agreement["max_abs_logp"]
    for profile in results["train"]["profile"].values():
        assert profile["seconds_per_step"]["lm head + log-softmax"] > 0 and profile["seconds_per_step"]["mlp"] > 0
    assert profile["seconds_per_step"]["reference forward"] > 0  # dpo_spin, the last one
    table = (tmp_path / "gpu_results.md").read_text()
    assert "| tspin_flex |" in table and "time per step by category" in table
