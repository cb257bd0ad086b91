"""bench/reproduce.py in its smallest mode: it runs every row end to end and writes the page, figures and JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "reproduce.py"
METHODS = ["sft_full", "sft_quarter", "spin", "tspin", "tspin_no_ha", "tspin_real_nll"]


def test_reproduce_smoke(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--work-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]

    results = json.loads((out / "figures" / "reproduction_results.json").read_text())
    assert results["meta"]["mode"] == "smoke"
    runs = results["runs"]
    assert sorted(r["method"] for r in runs) == sorted(METHODS)
    for run in runs:
        iterations = results["settings"][0]["iterations"]
        assert len(run["scores"]) == iterations + 1  # start + after every iteration
        assert len(run["heldout_logp_real"]) == iterations + 1
        assert all(0.0 <= s <= 1.0 for s in run["scores"])
        if run["method"].startswith("sft"):
            assert run["train_logs"] == {}
        else:
            assert len(run["train_logs"]["logps/real"]) == iterations
            assert all(v is not None for v in run["train_logs"]["logps/synthetic"])
    # Every row starts from the same warm start and is scored the same way (SFT callback vs TSPINTrainer's hook)
    assert len({r["scores"][0] for r in runs}) == 1
    assert len({round(r["heldout_logp_real"][0], 4) for r in runs}) == 1
    assert set(results["claims"]["tiny"]["0.0001"]) == {"monotone", "matches_sft_full", "likelihood_order"}

    page = (out / "reproduction.md").read_text()
    for needle in ("## The paper's three claims", "## Protocol", "## Results: tiny", "not in the paper",
                   "python bench/reproduce.py --smoke", "T-SPIN w/o H-A"):  # fmt: skip
        assert needle in page, needle
    for name in ("scores", "score_change", "logps", "heldout_logp"):
        figure = out / "figures" / f"reproduction_{name}_tiny.png"
        assert figure.is_file() and figure.stat().st_size > 1000
        assert f"figures/{figure.name}" in page
