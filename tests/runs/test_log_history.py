"""`trainer.state.log_history` in `DPOTrainer`'s shape: TRL's `DPOTrainer` and `TSPINTrainer` trained on the same tiny
model, data and settings log the same entries in the same order (training entries every `logging_steps`,
evaluations, one entry per evaluation set, the train summary last with the averaged metrics still pending), and
self-play's own quantities ride on the training entries and the summary instead of entries of their own.

The entries are compared by their structure: kind (training, evaluation of a named set, summary), `step`, `epoch`, and
the keys both trainers log (transformers' own, DPO's metric names that T-SPIN also logs, `aux_loss`, a
`compute_metrics` result); each trainer's own metric names differ by design and are left out, and so does the prefix
of DPO's metrics in the entry of one of several evaluation sets (`DPOTrainer` writes every set's under `eval_`,
T-SPIN under the set's `eval_<name>_`, as the loss is named: a deliberate difference, docs/migration.md)."""

import math
import shutil

import pytest
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tests.support import DPO_METRIC_NAMES, make_config, self_play_trainer, sorting_rows, tiny_moe
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


# Two epochs (iterations) of one step: 4 rows in batches of 4 (`per_device_train_batch_size=2` for two steps each);
# evaluation sets of 2 rows are one step each.
NUM_ITERATIONS = 2
SETTINGS = dict(
    per_device_train_batch_size=4,
    per_device_eval_batch_size=2,
    learning_rate=1e-3,
    warmup_steps=0,
    max_length=64,
    logging_steps=1,
    report_to=[],
    save_strategy="no",
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    dataloader_pin_memory=False,
    seed=0,
)
# Names both trainers log, without an evaluation prefix: transformers' own, and DPO's metric names T-SPIN also logs
SHARED = {
    "loss",
    "grad_norm",
    "learning_rate",
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "train_loss",
    "total_flos",
    *DPO_METRIC_NAMES,
    "aux_loss",
    "my_metric",
}


def preference_rows(n: int, offset: int = 0) -> list[dict]:
    """DPO's conversational preference rows (T-SPIN trains on `chosen` as the real response)."""
    return [
        {"prompt": row["prompt"], "chosen": row["completion"], "rejected": [{"role": "assistant", "content": "9 9"}]}
        for row in sorting_rows(n, offset=offset)
    ]


def kind(entry: dict) -> str:
    """`train`, `summary`, or `eval:<prefix>` (an evaluation entry, by the prefix of its `<prefix>_runtime`)."""
    if "train_runtime" in entry:
        return "summary"
    if "loss" in entry:
        return "train"
    prefixes = [key.removesuffix("_runtime") for key in entry if key.endswith("_runtime")]
    assert len(prefixes) == 1, f"not a training, evaluation or summary entry: {sorted(entry)}"
    return f"eval:{prefixes[0]}"


def shape(history: list[dict], own_prefix_only: bool = False) -> list[tuple]:
    """Each entry's kind, step, epoch and the shared keys it has (an evaluation entry's keys without its prefix, or
    without `eval_`: DPO's metrics in the entry of a named set). With `own_prefix_only`, check that an evaluation
    entry holds keys of its own prefix only."""
    shapes = []
    for entry in history:
        what = kind(entry)
        prefix = what.removeprefix("eval:") + "_" if what.startswith("eval:") else ""
        if prefix and own_prefix_only:
            strays = [k for k in entry if k not in ("epoch", "step") and not k.startswith(prefix)]
            assert not strays, f"{what} entry at step {entry['step']} has {strays}"
        names = {
            key.removeprefix(prefix) if key.startswith(prefix) else key.removeprefix("eval_" if prefix else "")
            for key in entry
            if key not in ("epoch", "step")
        }
        shapes.append((what, entry["step"], round(entry["epoch"], 6), sorted(names & SHARED)))
    return shapes


def train_both(tmp_path, tokenizer, model=None, eval_dataset=None, compute_metrics=None, **settings):
    """Train `DPOTrainer` and `TSPINTrainer` on the same model (saved to a folder: `DPOTrainer` loads its reference
    from it), data and settings; return both trainers."""
    model_dir = tmp_path / "model"
    (model or build_tiny_model(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    train = Dataset.from_list(preference_rows(4))
    options = SETTINGS | settings
    dpo = DPOTrainer(
        model=str(model_dir),
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), num_train_epochs=NUM_ITERATIONS, **options),
        train_dataset=train,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    dpo.train()
    tspin = TSPINTrainer(
        model=str(model_dir),
        args=make_config(tmp_path / "tspin", num_iterations=NUM_ITERATIONS, generation_batch_size=4, **options),
        train_dataset=train,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    tspin.train()
    return dpo, tspin


def assert_same_shape(dpo, tspin) -> list[tuple]:
    # self-play adds nothing to an evaluation entry: every key of one has the entry's prefix
    expected, got = shape(dpo.state.log_history), shape(tspin.state.log_history, own_prefix_only=True)
    assert got == expected
    assert expected[-1][0] == "summary"
    return expected


def riding(history: list[dict], name: str) -> list[tuple[str, int]]:
    """Where `name` rides: the kind and step of every entry that has it."""
    return [(kind(entry), entry["step"]) for entry in history if name in entry]


def test_plain_training_logs_every_step_then_the_summary(tmp_path, tokenizer):
    dpo, tspin = train_both(tmp_path, tokenizer)
    expected = assert_same_shape(dpo, tspin)
    assert [(k, step) for k, step, *_ in expected] == [("train", 1), ("train", 2), ("summary", 2)]
    history = tspin.state.log_history
    # iteration 0's summary rides on the first training entry of iteration 1, iteration 1's on the train summary
    assert riding(history, "iteration/loss/per_example") == [("train", 2), ("summary", 2)]
    assert riding(history, "self_play/advantage_vanished") == [("train", 2), ("summary", 2)]
    assert [h["self_play/iteration"] for h in history if "loss" in h] == [0, 1]
    records = tspin.run_folder.iteration_records()
    assert history[1]["iteration/logps/real"] == pytest.approx(records[0]["means"]["logps/real"])
    assert history[-1]["iteration/logps/real"] == pytest.approx(records[1]["means"]["logps/real"])


def test_evaluations_on_start_and_every_steps(tmp_path, tokenizer):
    dpo, tspin = train_both(
        tmp_path,
        tokenizer,
        eval_dataset=Dataset.from_list(preference_rows(2, offset=5)),
        eval_strategy="steps",
        eval_steps=1,
        eval_on_start=True,
    )
    expected = assert_same_shape(dpo, tspin)
    kinds = [(k, step) for k, step, *_ in expected]
    assert kinds == [("eval:eval", 0), ("train", 1), ("eval:eval", 1), ("train", 2), ("eval:eval", 2), ("summary", 2)]
    history = tspin.state.log_history
    assert history[0]["eval_loss"] is not None  # TRL's test_train_with_eval reads it
    # the inversion after iteration 0 rides on the first training entry of iteration 1, the final one on the summary
    # measured before training (on the first training entry), after iteration 0 (the first of iteration 1), at the end
    assert riding(history, "self_play/likelihood_inversion") == [("train", 1), ("train", 2), ("summary", 2)]


def test_two_evaluation_sets_each_have_their_entry(tmp_path, tokenizer):
    held_out = Dataset.from_list(preference_rows(2, offset=5))
    dpo, tspin = train_both(
        tmp_path, tokenizer, eval_dataset={"data1": held_out, "data2": held_out}, eval_strategy="steps", eval_steps=1
    )
    expected = assert_same_shape(dpo, tspin)
    assert [k for k, *_ in expected[-3:]] == ["eval:eval_data1", "eval:eval_data2", "summary"]
    history = tspin.state.log_history
    # TRL's test_train_with_multiple_eval_dataset reads them
    assert history[-3]["eval_data1_loss"] is not None and history[-2]["eval_data2_loss"] is not None
    assert riding(history, "self_play/likelihood_inversion_data2") == [("train", 1), ("train", 2), ("summary", 2)]


def test_compute_metrics_results_are_in_the_evaluation_entries(tmp_path, tokenizer):
    dpo, tspin = train_both(
        tmp_path,
        tokenizer,
        eval_dataset=Dataset.from_list(preference_rows(2, offset=5)),
        compute_metrics=lambda prediction: {"my_metric": 0.5},
        eval_strategy="steps",
        eval_steps=1,
    )
    expected = assert_same_shape(dpo, tspin)
    assert "my_metric" in expected[-2][3]
    assert tspin.state.log_history[-2]["eval_my_metric"] == 0.5  # TRL's test_train_with_compute_metrics reads it


def test_a_window_across_a_boundary_and_a_summary_with_the_pending_router_loss(tmp_path, tokenizer):
    # a Mixture-of-Experts model, two steps per iteration, a logging window of 3 steps: one training entry at step 3
    # (spanning the boundary after step 2), then the summary with step 4's averaged metrics, `aux_loss` among them
    dpo, tspin = train_both(
        tmp_path, tokenizer, model=tiny_moe(tokenizer), per_device_train_batch_size=2, logging_steps=3
    )
    assert dpo.aux_loss_enabled and tspin.aux_loss_enabled
    expected = assert_same_shape(dpo, tspin)
    assert [(k, step) for k, step, *_ in expected] == [("train", 3), ("summary", 4)]
    assert {"aux_loss", "rewards/margins"} <= set(expected[-1][3])
    line, summary = tspin.state.log_history
    assert math.isfinite(summary["aux_loss"])  # TRL's test_train reads it for MoE models
    assert (line["self_play/iteration"], line["beta"]) == (1, 0.1), "the iteration and beta at the entry's step"
    assert "iteration/logps/real" in line and "iteration/logps/real" in summary


def test_a_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path, tokenizer):
    # 2 iterations of 4 steps, a training entry every 3 steps (3, 6), a checkpoint at every step. At the boundary after
    # step 4 self-play measures the iteration's summary, the score, the likelihood inversion: they ride on step 6.
    held_out = Dataset.from_list(sorting_rows(10)[8:])

    def run(output_dir, resume_from=None):
        trainer = self_play_trainer(
            output_dir,
            tokenizer,
            eval_dataset=held_out,
            scorer=lambda responses, rows: sum(len(r) for r in responses) / 100,
            scorer_dataset=held_out,
            logging_steps=3,
            save_strategy="steps",
            save_steps=1,
        )
        trainer.train(resume_from_checkpoint=resume_from)
        return trainer.state.log_history

    full = run(tmp_path / "full")
    assert [(h["step"], kind(h)) for h in full] == [(3, "train"), (6, "train"), (8, "summary")]
    riders = ["iteration/logps/real", "self_play/score", "self_play/likelihood_inversion"]
    assert all(name in full[1] and name in full[2] for name in riders)
    # checkpoint-4 is saved before the boundary's measurements (the resume measures them again); checkpoint-5 after
    # them, before they are logged (the checkpoint keeps them pending; measured again, they are not logged twice)
    for step in (4, 5):
        copy = tmp_path / f"resumed_{step}"
        shutil.copytree(tmp_path / "full", copy)
        resumed = run(copy, resume_from=str(copy / f"checkpoint-{step}"))
        # what the resumed process ran itself: its preflight, and no generation pass at step 4 (iteration 1's
        # responses are read back from their file)
        own = {"self_play/preflight_seconds"} | (
            {k for k in full[1] if k.startswith("generation/")} if step == 4 else set()
        )
        for got, want in zip(resumed, full, strict=True):
            assert set(got) - own == set(want) - own, (step, set(got) ^ set(want))
        for name in riders:  # on the same entries (checked above), with the same values
            got, want = [h[name] for h in resumed if name in h], [h[name] for h in full if name in h]
            assert got == pytest.approx(want, rel=1e-5), (step, name)
