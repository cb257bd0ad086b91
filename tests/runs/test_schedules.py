"""Per-iteration schedules (learning rate, alpha, beta) and prompt selection before regeneration in a run, and resumes
across them (issue 23)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.support import iteration_rows, self_play_trainer, sorting_rows
from tspin_trl.loss import tspin_loss
from tspin_trl.self_play import SelfPlayError


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


def test_a_change_after_construction_that_makes_a_setting_ineffective_is_warned(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, prompt_selection_threshold=10.0)  # 2 iterations
    trainer.args.num_iterations = 1
    with pytest.warns(UserWarning, match=r"`prompt_selection_threshold=10.0` has no effect with num_iterations=1"):
        trainer.train()
    assert trainer.state.global_step == 4
