"""A run tells its story from Python: after `train()` with `save_strategy="no"` the output folder has a complete model
card and `results.md` that open with the verdict and table every iteration's held-out evidence and score;
`save_model()` rewrites them; `eval_logps/real_per_token` serves `metric_for_best_model`."""

import json
import math
import re

from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model, sorting_reward


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """The per-iteration table of a markdown page, by its first cell (`start`, `0`, `1`, ...)."""
    lines = text.splitlines()
    lines = [line for line in lines[lines.index(next(x for x in lines if x.startswith("| iteration |"))) :]]
    lines = lines[: next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in ("start", *map(str, range(10))):
            rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_after_train_with_save_strategy_no_the_card_and_results_tell_every_iteration(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, num_iterations=2, per_device_train_batch_size=2, save_strategy="no"),
        train_dataset=Dataset.from_list(sorting_rows(8)),
        eval_dataset=Dataset.from_list(sorting_rows(6, offset=40)),  # also the held-out prompts the score uses
        processing_class=tokenizer,
        reward_funcs=sorting_reward,
    )
    trainer.train()
    assert not list(tmp_path.glob("checkpoint-*")), "no checkpoint was written: the story comes from train() itself"
    results, card = (tmp_path / "results.md").read_text(), (tmp_path / "README.md").read_text()

    opening = results.split("\n\n")[1]
    assert opening.startswith("On 6 held-out prompts (`eval`), the log-likelihood of the real responses ")
    assert "The task score of greedy responses to 6 held-out prompts went from " in opening
    assert re.search(r"after iteration 0, \S+ after iteration 1", opening) and "Next: " in opening
    # the numbers are the records': the per-token log-likelihood before training and after the last iteration
    heldout = {line["label"]: line for line in map(json.loads, open(tmp_path / "self_play" / "heldout.jsonl"))}
    start, last = (heldout[label]["measures"]["heldout_logp_real_per_token"] for label in ("start", "iteration_1"))
    assert f"from {start:.3g} nats per token before training to {last:.3g} after iteration 1" in opening
    assert start == sum(heldout["start"]["logps"]["real"]) / sum(heldout["start"]["real_tokens"])

    rows = table_rows(results)
    assert list(rows) == ["start", "0", "1"]
    for name in ("heldout logp(y)/token", "heldout logp(y)-logp(y0)", "likelihood_inversion", "score"):
        assert all(rows[t][name] not in ("", "nan") for t in rows), (name, rows)
    assert all(rows[t]["loss"] for t in ("0", "1")), "the training means of every iteration, none missing"
    assert float(rows["start"]["heldout logp(y)/token"]) == float(f"{start:.4g}")

    # the card opens with the same verdict and carries the same complete table
    assert card.index("## What self-play did") < card.index("## Quick start") and opening in card
    assert table_rows(card) == rows

    # logged per iteration as the other self-play quantities are
    logged = [h for h in trainer.state.log_history if "self_play/heldout_logp_real_per_token" in h]
    # (riding on the next training entry, the last one on the train summary)
    assert [h["self_play/heldout_logp_real_per_token"] for h in logged] == [
        heldout[label]["measures"]["heldout_logp_real_per_token"] for label in ("start", "iteration_0", "iteration_1")
    ]
    assert "train_runtime" in logged[-1] and all("loss" in h for h in logged[:-1])
    scores = [json.loads(line) for line in open(tmp_path / "self_play" / "scores.jsonl")]
    assert [h["self_play/score"] for h in trainer.state.log_history if "self_play/score" in h] == [
        s["score"] for s in scores
    ]
    assert [len(s["per_prompt"]) for s in scores] == [6, 6, 6] and all(0 <= s["score"] <= 1 for s in scores)
    assert all("sorting_exact_match" in s["metrics"] for s in scores)

    # save_model() rewrites both, and copies them next to a model saved elsewhere
    (tmp_path / "results.md").write_text("stale")
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "results.md").read_text().split("\n\n")[1] == opening
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert (tmp_path / "final" / "results.md").read_text().startswith("# Results\n\nOn 6 held-out prompts")
    assert "## What self-play did" in (tmp_path / "final" / "README.md").read_text()


def test_eval_logps_real_per_token_selects_the_best_model(tmp_path, tokenizer):
    """The held-out log-likelihood per token keeps its meaning across iterations, unlike `eval_loss`; transformers
    reads it as `metric_for_best_model` (greater is better, from its name) for best-model selection."""
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(
            tmp_path,
            num_iterations=2,
            per_device_train_batch_size=2,
            eval_strategy="epoch",
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="eval_logps/real_per_token",
        ),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        eval_dataset=Dataset.from_list(sorting_rows(4, offset=40)),
        processing_class=tokenizer,
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    values = [h["eval_logps/real_per_token"] for h in evals]
    assert len(values) == 2 and all(math.isfinite(v) for v in values)
    assert [h["eval_logps/real_per_token"] for h in evals] == [
        h["eval_logps/real"] / h["eval_length/real"] for h in evals
    ]
    assert trainer.args.greater_is_better and trainer.state.best_metric == max(values)
    best_step = [h["step"] for h in evals][values.index(max(values))]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
