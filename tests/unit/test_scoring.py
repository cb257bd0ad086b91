"""`tspin_trl/scoring.py`: `ScoringCallback`, the user's scorer on held-out prompts between iterations."""

import math

import pytest
from datasets import Dataset
from transformers import TrainerControl, TrainerState

from tests.support import make_config, make_context, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.clock import IterationPoint
from tspin_trl.data import TripletTokenizer
from tspin_trl.demo import build_tiny_model
from tspin_trl.scoring import ScoringCallback


def test_the_scorer_scores_greedy_responses_once_per_label(tmp_path, tokenizer, caplog):
    held_out = Dataset.from_list(sorting_rows(3))
    calls = []

    def scorer(responses, rows):
        calls.append(len(responses))
        assert rows[1]["prompt"] == held_out[1]["prompt"]
        if len(calls) == 2:
            raise ZeroDivisionError("a bug in the user's scorer")
        return 0.5

    context, logged = make_context(tmp_path, tokenizer, steps_per_epoch=2, num_iterations=2, generation_batch_size=2)
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", context.eos_token_ids)
    scoring = ScoringCallback(context, scorer, held_out, encode)
    state, control = TrainerState(), TrainerControl()
    scoring.on_train_begin(context.args, state, control)
    context.start_iteration(IterationPoint(0, global_step=0))
    for step in (1, 2, 3):
        state.global_step = step
        with caplog.at_level("ERROR"):
            scoring.on_epoch_end(context.args, state, control)
    assert [s["label"] for s in scoring.scores] == ["start", "iteration_0"], "step 3 ends no iteration"
    assert math.isnan(scoring.scores[1]["score"]) and "ZeroDivisionError" in scoring.scores[1]["error"]
    assert "The scorer" in caplog.text and "training continues" in caplog.text
    assert [line["self_play/score"] for line in logged][0] == 0.5
    records = context.folder.scores()
    assert [len(r["responses"]) for r in records] == [3, 3]
    # greedy: the same policy gives the same responses
    assert records[0]["responses"] == records[1]["responses"]
    # a resumed run does not score a label again
    again = ScoringCallback(context, scorer, held_out, encode)
    again.on_train_begin(context.args, state, control)
    state.global_step = 2
    again.on_epoch_end(context.args, state, control)
    assert again.scores == [] and calls == [3, 3]


def test_scorer_needs_its_dataset(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="Pass both `scorer` and `scorer_dataset`"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(sorting_rows(2)),
            processing_class=tokenizer,
            scorer=lambda responses, rows: 0.0,
        )
