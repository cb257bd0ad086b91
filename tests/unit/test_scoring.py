"""`tspin_trl/scoring.py`: `ScoringCallback`, a task score on held-out prompts between iterations: reward functions in
TRL's `reward_funcs` shape (called as GRPOTrainer calls them) and the older `scorer(responses, rows)`."""

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
    with pytest.raises(ValueError, match="Pass `reward_funcs` \\(or `scorer`\\) and `scorer_dataset`"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(sorting_rows(2)),
            processing_class=tokenizer,
            scorer=lambda responses, rows: 0.0,
        )


def scoring_for(tmp_path, tokenizer, rows, **kwargs):
    context, logged = make_context(tmp_path, tokenizer, steps_per_epoch=2, num_iterations=2, generation_batch_size=2)
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", context.eos_token_ids)
    scoring = ScoringCallback(context, kwargs.pop("scorer", None), Dataset.from_list(rows), encode, **kwargs)
    return context, logged, scoring


def test_reward_funcs_are_called_as_grpo_calls_them_and_summed_per_response(tmp_path, tokenizer):
    rows = [row | {"answer": str(i)} for i, row in enumerate(sorting_rows(3))]
    calls = []

    def length_reward(prompts, completions, completion_ids, answer, trainer_state, log_metric, **kwargs):
        calls.append({"prompts": prompts, "completions": completions, "ids": completion_ids, "answer": answer})
        log_metric("mean_length", sum(len(c[0]["content"]) for c in completions) / len(completions))
        assert "completion" in kwargs and trainer_state.global_step == 0  # the dataset's other columns, GRPO's state
        return [1.0, None, 2.0]  # `None`: this function does not apply to the second response

    def constant_reward(completions, **kwargs):
        return [0.5, 0.5, 0.5]

    context, logged, scoring = scoring_for(tmp_path, tokenizer, rows, reward_funcs=[length_reward, constant_reward])
    scoring.on_train_begin(context.args, TrainerState(), TrainerControl())
    (call,) = calls
    assert call["prompts"] == [row["prompt"] for row in rows] and call["answer"] == ["0", "1", "2"]
    # conversational prompts: one assistant message per completion, as GRPO gives them; the token ids beside
    assert all(c[0]["role"] == "assistant" for c in call["completions"]) and len(call["ids"]) == 3
    assert [c[0]["content"] for c in call["completions"]] == context.folder.scores()[0]["responses"]
    (record,) = context.folder.scores()
    assert record["per_prompt"] == [1.5, 0.5, 2.5] and record["score"] == pytest.approx(1.5)
    assert record["scores"] == {"length_reward": 1.5, "constant_reward": 0.5}, "None is left out of a mean"
    assert record["rewards"]["length_reward"][0] == 1.0 and math.isnan(record["rewards"]["length_reward"][1])
    assert logged[0]["self_play/score"] == pytest.approx(1.5) and logged[0]["self_play/score/constant_reward"] == 0.5
    assert (
        "self_play/mean_length" in logged[0] and record["metrics"]["mean_length"] == logged[0]["self_play/mean_length"]
    )


def test_a_failing_or_misshapen_reward_function_is_named_and_its_rewards_are_missing(tmp_path, tokenizer, caplog):
    def short(completions, **kwargs):
        return [1.0]

    def fine(completions, **kwargs):
        return [0.25] * len(completions)

    context, logged, scoring = scoring_for(tmp_path, tokenizer, sorting_rows(2), reward_funcs=[short, fine])
    with caplog.at_level("ERROR"):
        value = scoring.score("start", 0)
    assert (
        value == 0.25 and "The scorer short raised ValueError: it returned 1 rewards for 2 completions" in caplog.text
    )
    assert context.folder.scores()[0]["error"].startswith("short: ValueError")


def test_plain_text_prompts_get_text_completions(tmp_path, tokenizer):
    seen = []

    def reward(prompts, completions, **kwargs):
        seen.extend(completions)
        return [0.0] * len(completions)

    context, _, scoring = scoring_for(tmp_path, tokenizer, sorting_rows(2, conversational=False), reward_funcs=reward)
    scoring.score("start", 0)
    assert all(isinstance(c, str) for c in seen) and seen == context.folder.scores()[0]["responses"]


async def async_reward(completions, **kwargs):
    return [0.0] * len(completions)


@pytest.mark.parametrize(
    ("reward_funcs", "message"),
    [
        ("org/reward-model", "functions only"),
        ([async_reward], "is an async function"),
        ([], "empty list"),
    ],
)
def test_reward_funcs_that_cannot_score_here_are_refused(tmp_path, tokenizer, reward_funcs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        scoring_for(tmp_path, tokenizer, sorting_rows(2), reward_funcs=reward_funcs)


def test_reward_funcs_or_scorer_not_both_and_the_eval_set_is_the_default_held_out_set(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="not both"):
        scoring_for(tmp_path, tokenizer, sorting_rows(2), scorer=lambda r, rows: 0.0, reward_funcs=lambda **k: [])
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(sorting_rows(2)),
        eval_dataset=Dataset.from_list(sorting_rows(3, offset=10)),
        processing_class=tokenizer,
        reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
    )
    assert [row["prompt"] for row in trainer.scoring.rows] == [row["prompt"] for row in sorting_rows(3, offset=10)]
