"""`tspin_trl/self_play/selection.py`: which prompts an iteration regenerates and trains on, and the rows that serve
them."""

from tspin_trl.data import TripletDataset
from tspin_trl.self_play import PromptSelection


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
