"""The benchmark scripts run end to end on tiny settings (no timing is asserted: only that every number is there)."""

import json

import pytest
import torch

from bench import bench_generation, bench_iteration, bench_scaling, bench_selection, bench_train_step
from bench.data import make_data
from bench.generation import ForcedLengthProcessor
from bench.memory import peak_step_bytes
from bench.models import build_tokenizer
from tspin_trl.demo import CHAR_SPECIAL_TOKENS


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread. With two, OpenMP's spin-waiting (the scripts set OMP_WAIT_POLICY=PASSIVE
    before importing torch; here torch is already imported) makes steps many times slower when other processes
    share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tokenizer_round_trips_every_id():
    tokenizer = build_tokenizer(600)
    assert len(tokenizer) == 600
    ids = list(range(len(CHAR_SPECIAL_TOKENS), 600))
    text = tokenizer.decode(ids)
    assert len(text) == len(ids)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids


def test_data_lengths_and_fixed_lengths():
    tokenizer = build_tokenizer(600)
    data = make_data(tokenizer, 32, prompt_low=16, prompt_high=64, response_max=20)
    prompts = [len(tokenizer(r["prompt"])["input_ids"]) for r in data.rows]
    assert min(prompts) >= 16 and max(prompts) <= 64 and len(set(prompts)) > 5
    assert all(len(r[k]) <= 19 for r in data.rows for k in ("completion", "synthetic", "proto"))
    fixed = make_data(tokenizer, 4, prompt_high=32, response_max=20, fixed_lengths=True)
    assert {len(r["prompt"]) for r in fixed.rows} == {32}
    assert {len(r[k]) for r in fixed.rows for k in ("completion", "synthetic", "proto")} == {19}


def test_forced_length_processor_ends_each_response_at_its_length():
    pad, eos = 0, 7
    prompts = [[10, 11, 12, 13], [20, 21]]
    processor = ForcedLengthProcessor(prompts, lengths=[3, 1], pad_id=pad, eos_id=eos, key_tokens=2)
    # left-padded batch, one token generated so far after each prompt
    input_ids = torch.tensor([[10, 11, 12, 13, 50], [pad, pad, 20, 21, 51]])
    scores = torch.zeros(2, 60)
    out = processor(input_ids, scores)
    assert out[1].argmax().item() == eos and torch.isinf(out[1]).sum() == 59  # length 1 reached: forced
    assert torch.equal(out[0], scores[0])  # 1 of 3 generated: untouched
    out = processor(torch.cat([input_ids, torch.tensor([[52], [eos]])], dim=1), scores)
    assert out[0].argmax().item() == eos  # second token generated: the third must be the eos


def test_peak_step_bytes_sees_a_transient_tensor():
    def allocate():
        x = torch.ones(1024, 1024)  # 4 MiB
        return float(x.sum())

    assert peak_step_bytes(allocate) >= 4 * 2**20


def test_train_step_smoke(tmp_path):
    path = tmp_path / "train.json"
    results = bench_train_step.main(["--smoke", "--contenders", "tspin,tspin_pair,tspin_stacked,dpo_spin,dpo_precompute",
                                     "--json", str(path)])  # fmt: skip
    saved = json.loads(path.read_text())
    assert set(saved["contenders"]) == {"tspin", "tspin_pair", "tspin_stacked", "dpo_spin", "dpo_precompute"}
    for entry in results["contenders"].values():
        assert entry["seconds_per_example"]["median"] > 0 and entry["pair_tokens_per_second"]["median"] > 0
        assert entry["memory"]["peak_bytes"] > entry["memory"]["persistent_bytes"] > 0
    assert results["contenders"]["dpo_precompute"]["precompute_seconds"] > 0
    assert (
        results["contenders"]["dpo_spin"]["memory"]["persistent_bytes"]
        > (results["contenders"]["dpo_precompute"]["memory"]["persistent_bytes"])
    )  # the resident reference model
    for key in ("time_per_example/tspin/dpo_spin", "time_per_example/tspin/dpo_precompute",
                "peak_memory/tspin/dpo_spin"):  # fmt: skip
        assert key in results["ratios"]


def test_generation_smoke(tmp_path):
    results = bench_generation.main(["--smoke", "--json", str(tmp_path / "gen.json")])
    settings = results["settings"]
    for scenario in ("cap", "realistic"):
        r = results["scenarios"][scenario]
        assert 0 < r["ours"]["useful_tokens"] <= settings["num_prompts"] * settings["max_new_tokens"]
        assert r["spin"]["generated_tokens_with_padding"] >= r["spin"]["useful_tokens"]
        assert r["spin"]["generate_calls"] == -(-settings["num_prompts"] // 16)
        assert r["ratio_tokens_per_second"]["median"] > 0
    realistic = results["scenarios"]["realistic"]
    assert realistic["ours"]["useful_tokens"] < settings["num_prompts"] * settings["max_new_tokens"]


def test_iteration_smoke(tmp_path):
    results = bench_iteration.main(["--smoke", "--json", str(tmp_path / "iteration.json")])
    tspin, spin = results["runs"]["tspin"][0], results["runs"]["spin"][0]
    assert tspin["generate_calls"] >= 1 and spin["generate_calls"] >= 1
    assert tspin["generated_tokens"] > 0 and spin["generated_tokens"] > 0
    assert tspin["seconds"] > tspin["generation_seconds"] > 0
    assert results["ratio_seconds"]["median"] > 0


def test_selection_smoke(tmp_path):
    results = bench_selection.main(["--smoke", "--json", str(tmp_path / "selection.json")])
    without, with_ = (results["runs"][name]["iterations"] for name in ("without", "with"))
    for a, b in zip(without[1:], with_[1:], strict=True):
        assert a["generated_prompts"] == a["prompts_kept"] == 12 and a["generation_seconds"] > 0
        assert b["generated_prompts"] == b["prompts_kept"] and b["prompts_kept"] + b["prompts_skipped"] == 12
        assert a["steps"] == b["steps"] and a["training_seconds"] > 0 and b["scoring_seconds"] > 0
    assert set(results["ratios"]["total"]) == {"generation", "generation_and_scoring", "training", "iteration"}


def test_scaling_smoke(tmp_path):
    results = bench_scaling.main(["--smoke", "--json", str(tmp_path / "scaling.json")])
    assert set(results["axes"]) == {"prompts", "response", "model"}
    for points in results["axes"].values():
        for point in points:
            assert point["tspin"]["iteration_seconds"] > 0 and point["dpo_spin"]["peak_bytes"] > 0


def test_profile_step_smoke():
    from bench import profile_step

    profiles = profile_step.main(["--smoke", "--contenders", "tspin"])
    seconds = profiles["tspin"]["seconds_per_step"]
    assert set(seconds) == set(profile_step.CATEGORIES)
    assert seconds["attention"] > seconds["attention kernel"] > 0 and seconds["optimizer"] > 0


def test_dpo_contract_probes_run_both_trainers(tmp_path):
    """`bench/dpo_contract.py` runs a user's code against DPOTrainer and TSPINTrainer and tabulates both outcomes."""
    from bench import dpo_contract
    from bench.contract import run_probe

    ctx = dpo_contract.Context(tmp_path)
    probes = {name: function for name, _, function in dpo_contract.PROBES}
    rows = []
    for name in ("data_standard prompt/chosen/rejected", "ctor_args_wrong_class"):
        row = {"name": name, "what": name}
        for which in dpo_contract.CONTRACT.sides:
            row[which], _ = run_probe(ctx, probes[name], which)
        rows.append(row)
    assert rows[0]["DPO"] == rows[0]["T-SPIN"] == "ok: 8 examples; [0] = 'sort: 0 3 6 9\\n' -> '0 3 6 9<|end|>'"
    assert rows[1]["T-SPIN"].startswith("error: TypeError: `args` must be a TSPINConfig")
    table = dpo_contract.CONTRACT.table({"versions": {"trl": "x"}, "probes": rows})
    assert "| same |" in table and "| DPO only |" in table and "<\\|end\\|>" in table
    assert table.startswith(
        "Measured with trl x: of the 2 probes, 1 gives the same outcome, and 1 runs only with `DPOTrainer`."
    )


def test_preflight_bench_smoke():
    """`bench/bench_preflight.py` times the same run with and without the preflight and reports each check."""
    from bench import bench_preflight

    (result,) = bench_preflight.main(["--smoke"])
    assert result["with"] > 0 and result["without"] > 0 and 0 < result["share"] < 1
    assert {"check: generation", "check: checkpoint save and load"} <= set(result)


def test_sft_contract_probes_run_both_trainers(tmp_path):
    """`bench/sft_contract.py` runs an SFT user's code against SFTTrainer and TSPINTrainer and tabulates both."""
    from bench import sft_contract
    from bench.contract import run_probe

    ctx = sft_contract.Context(tmp_path)
    probes = {name: function for name, _, function in sft_contract.PROBES}
    rows = []
    for name in ("data_text (language modeling)", "field_packing=True"):
        row = {"name": name, "what": name}
        for which in sft_contract.CONTRACT.sides:
            row[which], _ = run_probe(ctx, probes[name], which)
        rows.append(row)
    assert rows[0]["SFT"] == "ok: Dataset; [0] = '|sort: 0 3 6 9 -> 0 3 6 9<|end|>'"  # every token trained
    assert rows[0]["T-SPIN"] == "ok: TripletDataset; [0] = 'sort: 0 3 6 9 -> |0 3 6 9<|end|>'"  # the split rule
    assert rows[1]["T-SPIN"].startswith("error: ValueError: TSPINConfig.packing=True is invalid")
    table = sft_contract.CONTRACT.table({"versions": {"trl": "x"}, "probes": rows})
    assert "| both run |" in table and "| SFT only |" in table
    assert "of the 2 probes, 1 runs on both with different content, and 1 runs only with `SFTTrainer`." in table
