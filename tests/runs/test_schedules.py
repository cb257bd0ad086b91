"""Per-iteration schedules (learning rate, alpha, beta) and prompt selection before regeneration (issue 23)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.support import self_play_trainer, sorting_rows
from tspin_trl import TSPINConfig
from tspin_trl.data import TripletDataset
from tspin_trl.loss import tspin_loss
from tspin_trl.objective import ObjectivePolicy
from tspin_trl.self_play import PromptSelection, SelfPlayError


ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path, **kwargs) -> TSPINConfig:
    return TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, num_iterations=3, **kwargs)


def iteration_rows(output_dir, iteration) -> list[dict]:
    path = Path(output_dir) / "self_play" / f"iteration_{iteration}" / "train.jsonl"
    return [json.loads(line) for line in path.open()]


# ---- validation and parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"alpha_schedule": [1.0, 1.0]},
            r"alpha_schedule=\[1.0, 1.0\] is invalid: it has 2 values for num_iterations=3",
        ),
        ({"beta_schedule": [0.1, 0.1, 0.1, 0.1]}, "it has 4 values for num_iterations=3"),
        ({"learning_rate_schedule": [1.0, float("nan"), 1.0]}, r"value 1 \(nan\) must be a finite number"),
        ({"alpha_schedule": [1.0, float("inf"), 1.0]}, "must be a finite number"),
        ({"learning_rate_schedule": [1.0, 0.0, 1.0]}, r"value 1 \(0.0\) must be > 0"),
        ({"alpha_schedule": [1.0, 1.0, 0.0]}, r"value 2 \(0.0\) must be > 0 and <= 100"),
        ({"alpha_schedule": [1.0, 1.0, 1e3]}, "must be > 0 and <= 100"),
        ({"beta_schedule": [0.0, -0.1, 0.1]}, r"value 1 \(-0.1\) must be >= 0 and <= 100"),
        ({"beta_schedule": [0.0, True, 0.1]}, r"value 1 \(True\) is not a number"),
        ({"beta_schedule": [0.0, "0.1", 0.1]}, r"value 1 \('0.1'\) is not a number"),
        ({"beta_schedule": "0.1 0.1 0.1"}, "it must be a list of 3 numbers"),
        ({"learning_rate_schedule": [1.0, 1.0, 5.0], "learning_rate": 0.5}, "an iteration would train at 2.5"),
        ({"alpha_schedule": [1.0, 1.0, 1.0], "alpha": 0.5}, "TSPINConfig.alpha=0.5 is invalid: alpha_schedule sets"),
        ({"beta_schedule": [0.0, 0.1, 0.1], "beta_first_iteration": 0.1}, "beta_first_iteration=0.1 is invalid"),
        ({"beta_schedule": [0.0, 0.1, 0.1], "objective": "spin"}, "SPIN's own `beta` is its reward scale"),
        ({"prompt_selection_threshold": 0.0}, "prompt_selection_threshold=0.0 is invalid: it must be > 0"),
        (
            {"prompt_selection_threshold": float("inf")},
            "prompt_selection_threshold=inf is invalid: it must be a finite",
        ),
        ({"prompt_selection_threshold": 10.0, "objective": "spin"}, "prompt selection needs objective='tspin'"),
        ({"prompt_selection_threshold": 10.0, "objective": "tspin_ref"}, "prompt selection needs objective='tspin'"),
        ({"prompt_selection_min_share": 0.0}, r"prompt_selection_min_share=0.0 is invalid: it must be in \(0, 1\]"),
        ({"prompt_selection_min_share": 1.5}, r"it must be in \(0, 1\]"),
    ],
)
def test_invalid_schedules_and_selection_settings_name_the_field(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **kwargs)


def test_schedules_are_checked_again_when_train_starts(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, alpha_schedule=[1.0, 2.0])
    trainer.args.num_iterations = 3  # changed after construction: the schedule no longer has one value per iteration
    with pytest.raises(ValueError, match="alpha_schedule=.* it has 2 values for num_iterations=3"):
        trainer.train()


def test_integer_values_become_floats_and_spin_accepts_a_zero_beta_schedule(tmp_path):
    args = config(tmp_path, learning_rate_schedule=[1, 1, 2], objective="spin", beta_schedule=[0, 0, 0])
    assert args.learning_rate_schedule == [1.0, 1.0, 2.0] and all(isinstance(v, float) for v in args.beta_schedule)


def test_schedules_parse_from_the_command_line_and_from_yaml(tmp_path):
    from trl import TrlParser

    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--num_iterations", "3", "--beta_schedule", "0.1", "0.1", "5.0"]
        + ["--learning_rate_schedule", "1", "1", "0.2", "--prompt_selection_threshold", "10", "--report_to", "none"]
    )
    assert args.beta_schedule == [0.1, 0.1, 5.0] and args.learning_rate_schedule == [1.0, 1.0, 0.2]
    assert args.prompt_selection_threshold == 10.0 and args.alpha_schedule is None
    path = tmp_path / "config.yaml"
    path.write_text("num_iterations: 3\nalpha_schedule: [0.1, 0.1, 5]\nlearning_rate_schedule: [1, 1, 0.2]\n")
    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(
        ["--config", str(path), "--output_dir", str(tmp_path), "--report_to", "none"]
    )
    assert args.alpha_schedule == [0.1, 0.1, 5.0] and args.learning_rate_schedule == [1.0, 1.0, 0.2]


@pytest.mark.parametrize(
    "name, learning_rates, alphas",
    [
        ("spin_scripts", [5e-7, 5e-7, 1e-7, 1e-7], [0.1, 0.1, 0.1, 5.0]),
        ("nemo_annealing", [5e-7, 3e-7, 1e-7], [0.1, 0.1 * math.sqrt(50), 5.0]),
    ],
)
def test_the_preset_configs_say_what_their_sources_say(tmp_path, name, learning_rates, alphas):
    from tspin_trl.scripts.train import make_parser

    path = ROOT / "examples" / "configs" / f"{name}.yaml"
    _, args, *_ = make_parser().parse_args_and_config(
        args=["--config", str(path), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    )
    policy = ObjectivePolicy.from_config(args, own_synthetic=False)
    assert args.objective == "spin" and args.num_iterations == len(learning_rates)
    assert [args.learning_rate * policy.learning_rate_scale(t) for t in range(args.num_iterations)] == pytest.approx(
        learning_rates
    )
    assert [policy.alpha_for(t) for t in range(args.num_iterations)] == pytest.approx(alphas, rel=1e-3)
    assert [policy.beta_for(t) for t in range(args.num_iterations)] == [0.0] * args.num_iterations


def test_the_policy_reads_the_schedules(tmp_path):
    args = config(tmp_path, alpha_schedule=[1.0, 0.5, 2.0], beta_schedule=[0.3, 0.2, 0.4])
    for own_synthetic in (False, True):  # beta_schedule[0] is iteration 0's beta whatever its synthetic source
        policy = ObjectivePolicy.from_config(args, own_synthetic=own_synthetic)
        assert [policy.beta_for(t) for t in range(3)] == [0.3, 0.2, 0.4]
        assert [policy.alpha_for(t) for t in range(3)] == [1.0, 0.5, 2.0]
        assert policy.roles_for(0) == ("real", "synthetic", "proto")
    plain = ObjectivePolicy.from_config(config(tmp_path), own_synthetic=False)
    assert [(plain.alpha_for(t), plain.beta_for(t), plain.learning_rate_scale(t)) for t in range(3)] == [
        (1.0, 0.0, 1.0),
        (1.0, 0.1, 1.0),
        (1.0, 0.1, 1.0),
    ]


# ---- the schedules, part by part --------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", [True, False])
def test_the_learning_rate_of_each_iteration_is_its_multiplier_times_the_base_schedule(tmp_path, tokenizer, restart):
    trainer = self_play_trainer(
        tmp_path, tokenizer, num_iterations=3, restart_each_iteration=restart, learning_rate_schedule=[1.0, 0.5, 0.2]
    )
    trainer.clock.set_steps_per_epoch(4)  # as train() does once it has sized the dataloader: 12 steps in all
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=12)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        scheduler.step()
    # linear decay (no warm-up) over each iteration's 4 steps with restarts, else over the 12 steps of the run
    decay = [1 - s / 4 for s in range(4)] * 3 if restart else [1 - s / 12 for s in range(12)]
    multipliers = [m for m in (1.0, 0.5, 0.2) for _ in range(4)]
    assert rates == pytest.approx([1e-3 * m * d for m, d in zip(multipliers, decay, strict=True)])


def test_the_loss_uses_the_alpha_and_beta_of_the_current_iteration(tmp_path, tokenizer):
    rows = [
        row
        | {"synthetic": [{"role": "assistant", "content": "1 2"}], "proto": [{"role": "assistant", "content": "9"}]}
        for row in sorting_rows(4)
    ]
    alphas, betas = [1.0, 0.3, 2.0], [0.5, 0.0, 0.7]
    trainer = self_play_trainer(
        tmp_path, tokenizer, rows=rows, num_iterations=3, alpha_schedule=alphas, beta_schedule=betas
    )
    trainer.model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for iteration in range(3):
        trainer.start_iteration(iteration)
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        real, synthetic, proto = outputs["logps"]
        expected, *_ = tspin_loss(real, synthetic, proto, alpha=alphas[iteration], beta=betas[iteration])
        torch.testing.assert_close(loss.detach(), expected.mean())
        scaled = trainer.metrics.flush("train")["advantage/current"]
        assert scaled == pytest.approx(alphas[iteration] * (real - synthetic).mean().item(), rel=1e-5)


# ---- prompt selection: the decision -----------------------------------------------------------------------------


def test_prompts_above_the_threshold_are_skipped_and_the_floor_keeps_the_least_saturated():
    margins = [12.0, 3.0, 15.0, 11.0, float("nan"), 20.0, 11.0, 9.0]
    selection = PromptSelection.decide(margins, threshold=10.0, min_share=0.25)
    assert selection.kept == (False, True, False, False, True, False, False, True)  # NaN: kept, not judged saturated
    assert (selection.num_kept, selection.num_skipped) == (3, 5)
    floored = PromptSelection.decide(margins, threshold=10.0, min_share=0.75)  # 6 of 8: + 11.0 (3, then 6), 12.0
    assert floored.kept_indices == [0, 1, 3, 4, 6, 7]
    everything_saturated = PromptSelection.decide([50.0, 40.0, 30.0, 60.0], threshold=10.0, min_share=0.1)
    assert everything_saturated.kept == (False, False, True, False)  # at least one prompt, the least saturated


def test_skipped_rows_serve_the_kept_prompts_least_saturated_first():
    selection = PromptSelection.decide([12.0, 3.0, 15.0, 11.0, 2.0, 30.0], threshold=10.0, min_share=0.25)
    assert selection.kept_indices == [1, 4]
    assert selection.served_rows() == [4, 1, 1, 4, 4, 1]  # skipped rows 0, 2, 3, 5 -> 4, 1, 4, 1 (margin 2 first)
    examples = [
        {"prompt_ids": [i], "real_ids": [i], "synthetic_ids": [i], "previous_synthetic_ids": [-i]} for i in range(6)
    ]
    mixed = TripletDataset(examples, mix_previous=True)
    mixed.serve(selection.served_rows())
    assert len(mixed) == 12
    assert [mixed[i]["prompt_ids"][0] for i in range(12)] == [4, 1, 1, 4, 4, 1] * 2
    assert [mixed[i]["synthetic_ids"][0] for i in range(6, 12)] == [-4, -1, -1, -4, -4, -1]
    rows = [selection.row_fields(i) for i in range(6)]
    assert PromptSelection.from_rows(rows) == selection
    assert PromptSelection.from_rows([{**rows[0], "selected": "yes"}, *rows[1:]]) is None
    mixed.restore_given()
    assert mixed.served is None


# ---- one run with schedules and prompt selection ----------------------------------------------------------------

# On the tiny model these keep 4 of 8 prompts in iteration 1 by the floor and skip some in iteration 2 by the
# threshold alone; the tests check relations, not these counts.
SETTINGS = dict(
    num_iterations=3,
    seed=3,
    learning_rate_schedule=[1.0, 0.5, 0.2],
    alpha_schedule=[1.0, 1.2, 1.0],
    beta_schedule=[0.0, 0.1, 0.2],
    prompt_selection_threshold=15.0,
    prompt_selection_min_share=0.5,
    save_strategy="steps",
    save_steps=2,
)


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory):
    """An uninterrupted 3-iteration run (4 steps each) with every schedule and prompt selection, a checkpoint every 2
    steps."""
    from tspin_trl.demo import build_char_tokenizer

    folder = tmp_path_factory.mktemp("scheduled")
    tokenizer = build_char_tokenizer()
    trainer = self_play_trainer(folder / "run", tokenizer, proto_cache_dir=str(folder / "cache"), **SETTINGS)
    trainer.train()
    return tokenizer, folder / "run", trainer


def interrupted_copy(run: Path, destination: Path, step: int, iteration: int) -> Path:
    """`run`'s folder as an interruption after `step` (in `iteration`) leaves it: no later checkpoint, no later
    iteration file."""
    shutil.copytree(run, destination)
    for checkpoint in destination.glob("checkpoint-*"):
        if int(checkpoint.name.split("-")[1]) > step:
            shutil.rmtree(checkpoint)
    for files in (destination / "self_play").glob("iteration_*"):
        if int(files.name.split("_")[1]) > iteration:
            shutil.rmtree(files)
    return destination


def test_each_iteration_trains_at_its_learning_rate_alpha_and_beta_and_logs_them(scheduled_run):
    _, output_dir, trainer = scheduled_run
    lines = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["self_play/iteration"] for h in lines] == [0] * 4 + [1] * 4 + [2] * 4
    decay = [1.0, 0.75, 0.5, 0.25]  # linear, restarted every iteration, no warm-up
    expected = [1e-3 * m * d for m in SETTINGS["learning_rate_schedule"] for d in decay]
    assert [h["learning_rate"] for h in lines] == pytest.approx(expected)
    assert [h["alpha"] for h in lines] == [a for a in SETTINGS["alpha_schedule"] for _ in range(4)]
    assert [h["beta"] for h in lines] == [b for b in SETTINGS["beta_schedule"] for _ in range(4)]
    records = trainer.run_folder.iteration_records()
    assert [(records[t]["learning_rate"], records[t]["alpha"], records[t]["beta"]) for t in range(3)] == [
        (pytest.approx(1e-3 * m), a, b) for m, a, b in zip(*(SETTINGS[k] for k in ("learning_rate_schedule",
                                                                                  "alpha_schedule", "beta_schedule")))
    ]  # fmt: skip
    from tspin_trl.plot import iteration_table

    header = iteration_table(str(output_dir)).splitlines()[0]
    assert "| learning_rate | alpha | beta | prompts_kept | prompts_skipped |" in header


def test_prompt_selection_skips_regeneration_and_training_counts_them_and_keeps_a_floor(scheduled_run):
    _, output_dir, trainer = scheduled_run
    records = trainer.run_folder.iteration_records()
    logged = {h["self_play/iteration"]: h for h in trainer.state.log_history if "self_play/prompts_kept" in h}
    assert sorted(logged) == [1, 2] and "prompts_kept" not in records[0]
    floored = partial = False
    for t in (1, 2):
        rows, before = iteration_rows(output_dir, t), iteration_rows(output_dir, t - 1)
        kept = [row["selection_margin"] for row in rows if row["selected"]]
        skipped = [row["selection_margin"] for row in rows if not row["selected"]]
        below = sum(row["selection_margin"] <= 15.0 for row in rows)
        # the threshold, then the floor (4 of 8), least saturated first
        assert len(kept) == max(4, below) and max(kept) <= min(skipped, default=float("inf"))
        floored |= below < 4
        partial |= 4 < below < 8
        counts = (len(kept), len(skipped))
        assert (logged[t]["self_play/prompts_kept"], logged[t]["self_play/prompts_skipped"]) == counts
        assert (records[t]["prompts_kept"], records[t]["prompts_skipped"]) == counts
        meta = json.loads((output_dir / "self_play" / f"iteration_{t}" / "train.meta.json").read_text())
        assert (meta["prompt_selection"]["kept"], meta["prompt_selection"]["skipped"]) == counts
        assert meta["prompt_selection"]["alpha"] == SETTINGS["alpha_schedule"][t]
        # only the kept prompts were sampled; a skipped prompt keeps its last synthetic response
        assert trainer.self_play.generation_stats[f"iteration_{t}/train"].num_prompts == len(kept)
        for row, earlier in zip(rows, before, strict=True):
            if not row["selected"]:
                assert row["synthetic_ids"] == earlier["synthetic_ids"]
    assert floored and partial, "the settings should exercise both the floor and the threshold"
    # what iteration 2 trains on (every row of the dataset the dataloader holds): its kept prompts only, N rows
    dataset = trainer.train_dataset
    kept_prompts = {tuple(dataset.examples[i]["prompt_ids"]) for i in trainer.self_play.selections[2].kept_indices}
    assert {tuple(dataset[i]["prompt_ids"]) for i in range(len(dataset))} == kept_prompts and len(dataset) == 8


@pytest.mark.parametrize(
    "change",
    [
        {"learning_rate_schedule": [1.0, 0.1, 0.2]},
        {"alpha_schedule": [1.0, 2.0, 1.0]},
        {"beta_schedule": [0.0, 0.5, 0.2]},
        {"prompt_selection_threshold": 12.0},
        {"prompt_selection_min_share": 0.25},
    ],
)
def test_a_resume_at_an_iteration_boundary_with_a_changed_schedule_is_refused(tmp_path, scheduled_run, change):
    tokenizer, run, _ = scheduled_run
    output_dir = interrupted_copy(run, tmp_path / "run", step=4, iteration=0)
    resumed = self_play_trainer(output_dir, tokenizer, **(SETTINGS | change))
    (field,) = change
    with pytest.raises(SelfPlayError, match=f"Cannot resume.*Changed: {field} "):
        resumed.train(resume_from_checkpoint=str(output_dir / "checkpoint-4"))
    assert not (output_dir / "self_play" / "iteration_1").exists()


def test_a_resume_after_a_selection_makes_the_same_decisions_and_ends_with_the_same_parameters(
    tmp_path, scheduled_run
):
    """Interrupted after step 6 (in iteration 1): iteration 1's decisions come from its file, iteration 2's are
    made again after the resume; both, and the final parameters, are those of the uninterrupted run."""
    tokenizer, run, reference = scheduled_run
    output_dir = interrupted_copy(run, tmp_path / "run", step=6, iteration=1)
    resumed = self_play_trainer(output_dir, tokenizer, **SETTINGS)
    resumed.train(resume_from_checkpoint=str(output_dir / "checkpoint-6"))
    assert sorted(resumed.self_play.generation_stats) == ["iteration_2/train"]
    assert resumed.self_play.selections[1] == reference.self_play.selections[1]  # loaded from iteration 1's file
    for t in (1, 2):
        assert iteration_rows(output_dir, t) == iteration_rows(run, t)
    for (name, a), b in zip(reference.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")
