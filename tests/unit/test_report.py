"""`tspin_trl/report.py`: the run's verdict from its records (intervals, signs, the inconclusive case, alarms, advice),
`results.md` and the files it links."""

import json
import math
import os
from pathlib import Path

import pytest

from tspin_trl.plot import iteration_table
from tspin_trl.report import (
    direction,
    paired_change,
    ratio_change,
    result_links,
    results_markdown,
    t_quantile,
    verdict,
    write_results,
)
from tspin_trl.run_folder import RunFolder


def test_paired_change_is_the_mean_difference_with_a_t_interval():
    mean, low, high = paired_change([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    # differences 1, 2, 3: sd 1, standard error 1/sqrt(3), t(2) = 4.303
    assert (
        mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - low == pytest.approx(high - mean)
    )
    assert paired_change([1.0, math.nan, 2.0], [2.0, 5.0, 2.0])[0] == 0.5, "a pair with a missing value is left out"
    assert paired_change([1.0], [2.0]) is None
    assert t_quantile(1) == 12.706 and t_quantile(1000) == 1.96


def test_ratio_change_is_a_per_token_change_with_the_ratio_estimators_interval():
    # three responses of 2, 4 and 6 tokens, each 0.5 nats per token likelier: exactly +0.5, no spread
    change, low, high = ratio_change([-10.0, -20.0, -30.0], [-9.0, -18.0, -27.0], [2, 4, 6])
    assert (change, low, high) == pytest.approx((0.5, 0.5, 0.5))
    change, low, high = ratio_change([-10.0, -20.0, -30.0], [-9.0, -20.0, -26.0], [2, 4, 6])
    assert change == pytest.approx(5 / 12) and low < 0 < high
    assert ratio_change([-1.0], [0.0], [1]) is None


def test_a_change_is_up_or_down_only_when_its_interval_excludes_zero():
    assert direction((1.0, 0.1, 1.9)) == "up" and direction((-1.0, -1.9, -0.1)) == "down"
    assert direction((1.0, -0.1, 2.1)) == "inconclusive" and direction(None) == "inconclusive"


def write_run(output_dir: Path, real_by_label: dict, scores: list | None = None, alarms: dict | None = None) -> None:
    """A run's records by hand: held-out real log-probs per label (4 prompts of 10 tokens) and iteration summaries."""
    folder = RunFolder(str(output_dir))
    os.makedirs(folder.root, exist_ok=True)
    lines = []
    for label, real in real_by_label.items():
        iteration = None if label == "start" else int(label.split("_")[1])
        measures = {"heldout_logp_real_per_token": sum(real) / 40, "likelihood_inversion": 0.25}
        lines.append(
            {"label": label, "iteration": iteration, "step": 0, "dataset": "eval", "measures": measures}
            | {"real_tokens": [10] * 4, "logps": {"real": real, "synthetic": real}}
        )
    Path(folder.heldout_path).write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = [
        {"iteration": t, "first_step": 4 * t + 1, "last_step": 4 * t + 4, "complete": True, "means": {}}
        | {"advantage_vanished": t in (alarms or {}).get("vanished", [])}
        | {"advantage_saturated": t in (alarms or {}).get("saturated", [])}
        | lines[t + 1]["measures"]  # the held-out measures are recorded per iteration too
        for t in range(len(real_by_label) - 1)
    ]
    Path(folder.iterations_path).write_text("".join(json.dumps(record) + "\n" for record in records))
    if scores is not None:
        Path(folder.scores_path).write_text("".join(json.dumps(record) + "\n" for record in scores))


def test_the_verdict_reports_a_rise_with_its_interval_and_advises_more_iterations(tmp_path):
    write_run(
        tmp_path,
        {"start": [-40.0, -42.0, -38.0, -41.0], "iteration_0": [-30.0, -31.0, -29.0, -32.0]}
        | {"iteration_1": [-20.0, -22.0, -19.0, -21.0]},
        scores=[
            {"label": "start", "score": 0.0, "per_prompt": [0.0, 0.0, 0.0, 0.0], "responses": [""] * 4},
            {"label": "iteration_0", "score": 0.5, "per_prompt": [0.5, 0.5, 0.5, 0.5]},
            {"label": "iteration_1", "score": 0.75, "per_prompt": [0.75, 0.7, 0.8, 0.75]},
        ],
    )
    text = verdict(str(tmp_path))
    # -161 / 40 nats per token before, -82 / 40 after: +1.975 per token
    assert "the log-likelihood of the real responses rose from -4.03 nats per token before training to -2.05" in text
    assert "+1.98 (95% interval" in text and "iteration 0 +0.975 (up); iteration 1 +1 (up)" in text
    assert "went from 0 before training to 0.5 after iteration 0, 0.75 after iteration 1: +0.75" in text
    assert "The current advantage neither vanished nor saturated" in text
    assert "Next: the last iteration still improved, so more iterations (`num_iterations`) may help." in text


def test_a_change_within_noise_is_called_inconclusive(tmp_path):
    write_run(
        tmp_path,
        {"start": [-40.0, -42.0, -38.0, -41.0], "iteration_0": [-39.0, -43.0, -37.0, -42.0]},
        alarms={"saturated": [0]},
    )
    text = verdict(str(tmp_path), saturation_threshold=10.0)
    assert "the log-likelihood of the real responses changed from" in text and "within noise, so inconclusive" in text
    assert "The loss saturated in iteration 0" in text and "`saturation_threshold` (10)" in text
    assert "nothing moved beyond noise" in text and "a lower `alpha`" in text
    assert "rose" not in text and "fell" not in text


def test_a_fall_is_reported_with_its_sign_and_the_advice_to_slow_down(tmp_path):
    write_run(
        tmp_path,
        {"start": [-20.0, -22.0, -19.0, -21.0], "iteration_0": [-30.0, -31.0, -29.0, -32.0]},
        alarms={"vanished": [0]},
    )
    text = verdict(str(tmp_path))
    assert "fell from -2.05 nats per token before training to -3.05 after iteration 0: -1 (95% interval" in text
    assert "The current advantage vanished in iteration 0" in text and "a lower `learning_rate`" in text


def test_an_older_scorer_gives_numbers_without_a_verdict_and_no_eval_set_is_said(tmp_path):
    folder = RunFolder(str(tmp_path))
    os.makedirs(folder.root)
    Path(folder.iterations_path).write_text(json.dumps({"iteration": 0, "means": {}, "advantage_vanished": False}))
    scores = [{"label": "start", "score": 0.25, "responses": ["a"]}, {"label": "iteration_0", "score": 0.5}]
    Path(folder.scores_path).write_text("".join(json.dumps(score) + "\n" for score in scores))
    text = verdict(str(tmp_path))
    assert text.startswith("There is no held-out evidence: the run had no evaluation set.")
    assert "went from 0.25 before training to 0.5 after iteration 0 (the scorer returns one number" in text
    assert "give an evaluation set" in text
    assert verdict(str(tmp_path / "nothing")) == "No self-play iteration has finished yet: nothing to judge."


def test_results_md_opens_with_the_verdict_then_the_table_and_the_files(tmp_path):
    write_run(tmp_path, {"start": [-40.0, -42.0, -38.0, -41.0], "iteration_0": [-30.0, -31.0, -29.0, -32.0]})
    text = results_markdown(str(tmp_path), iteration_table(str(tmp_path)))
    assert text.startswith("# Results\n\nOn 4 held-out prompts (`eval`), the log-likelihood")
    assert "| iteration | steps | heldout logp(y)/token | likelihood_inversion | score |" not in text  # no score
    assert "| start |  | -4.025 | 0.25 |" in text and "| 0 | 1-4 | -3.05 | 0.25 | False | False |" in text
    assert text.index("## Per iteration") < text.index("## Files") and "heldout.jsonl" in text
    assert Path(write_results(str(tmp_path), iteration_table(str(tmp_path)))).read_text() == text


def test_results_md_links_only_files_that_exist(tmp_path):
    folder = RunFolder(str(tmp_path))
    os.makedirs(os.path.join(folder.root, "iteration_0"))
    for path in (os.path.join(folder.root, "iteration_0", "train.jsonl"), folder.logs_path, tmp_path / "README.md"):
        Path(path).write_text("{}\n")
    links = result_links(tmp_path, folder)
    assert "scores.jsonl" not in links and "iterations.jsonl" not in links and "heldout.jsonl" not in links
    assert "iteration_*/train.jsonl" in links and "logs.jsonl" in links and "README.md" in links
    Path(folder.scores_path).write_text("{}\n")
    assert "- held-out responses and scores: " in result_links(tmp_path, folder)
