"""`tspin_trl/self_play/selection.py`: which prompts an iteration regenerates and trains on, the rows that serve
them, `score_last_pairs` (the scaled current advantage of every prompt's last pair under the current policy) on a
model whose log-probs are known by hand, and `select_prompts` (the decision from the previous iteration's file,
logged and recorded)."""

import math

import pytest
import torch

from tests.support import make_context, model_logps
from tspin_trl.clock import IterationPoint
from tspin_trl.data import TripletDataset
from tspin_trl.demo import build_tiny_model
from tspin_trl.self_play import IterationFiles, PromptSelection, SelfPlayError
from tspin_trl.self_play.selection import score_last_pairs, select_prompts


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


def uniform(model):
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    return model


REAL = [20, 21, 22, 23]


def dataset(n: int = 4) -> TripletDataset:
    examples = [
        {"prompt_ids": [5, 6], "real_ids": REAL, "synthetic_ids": [9], "prompt_text": "p", "real_text": "r"}
        for _ in range(n)
    ]
    return TripletDataset(examples)


def test_the_margin_of_a_last_pair_is_alpha_times_its_current_advantage(tmp_path, tokenizer):
    model = uniform(build_tiny_model(tokenizer))
    context, _ = make_context(tmp_path, tokenizer, model)
    last = [[30], [30, 31, 32, 33], [30, 31, 32, 33, 34, 35], [30, 31]]  # not the dataset's own synthetic column
    margins = score_last_pairs(context, dataset(), last, alpha=2.0)
    log_v = math.log(model.config.vocab_size)  # every token has log-prob -log(V)
    assert margins == pytest.approx([2.0 * (len(s) - len(REAL)) * log_v for s in last])


def test_the_margins_are_the_current_policys(tmp_path, tokenizer, model):
    context, _ = make_context(tmp_path, tokenizer, model)
    last = [[30, 31], [40], [50, 51, 52], [60]]
    probe = dataset()
    probe.set_column("synthetic_ids", last)
    logps = model_logps(model)(probe, ("real", "synthetic"))
    expected = [0.5 * (r - s) for r, s in zip(logps["real"], logps["synthetic"], strict=True)]
    assert score_last_pairs(context, dataset(), last, alpha=0.5) == pytest.approx(expected)


def test_prompts_are_selected_from_the_previous_iterations_file_and_the_counts_recorded(tmp_path, tokenizer):
    model = uniform(build_tiny_model(tokenizer))
    context, logged = make_context(
        tmp_path, tokenizer, model, num_iterations=3, prompt_selection_threshold=5.0, prompt_selection_min_share=0.25
    )
    files = IterationFiles(context.folder, context.vocab_size, "this-run")
    data = dataset()
    with pytest.raises(SelfPlayError, match="iteration 0's file"):
        select_prompts(context, files, data, IterationPoint(1, global_step=4))
    # last pairs: margins (len(s) - 4) * log(V) = -13.9, 0, 4.7, 9.3 with alpha 1: the last one is above 5
    last = [[30], [30] * 4, [30] * 5, [30] * 6]
    data.set_column("synthetic_ids", last)
    files.write_iteration(0, "train", data, tokenizer, meta={})
    selection, synthetic = select_prompts(context, files, dataset(), IterationPoint(1, global_step=4))
    assert synthetic == last and selection.kept == (True, True, True, False)
    assert logged[0]["self_play/prompts_kept"] == 3.0 and logged[0]["self_play/prompts_skipped"] == 1.0
    record = context.folder.iteration_records()[1]
    assert (record["step"], record["prompts_kept"], record["prompts_skipped"]) == (4, 3, 1)
    assert selection.summary(context, 1) == {
        "threshold": 5.0,
        "min_share": 0.25,
        "alpha": 1.0,
        "kept": 3,
        "skipped": 1,
    }


def test_a_skipped_prompt_keeps_its_last_synthetic_response():
    selection = PromptSelection.decide([1.0, 20.0, 2.0], threshold=10.0, min_share=0.1)
    assert selection.merged([[1], [2], [3]], [[7], [8]]) == [[7], [2], [8]]
    with pytest.raises(ValueError):
        selection.merged([[1], [2], [3]], [[7]])  # one sample per kept prompt
