"""`tspin_trl/plot.py`: `tspin-plot`'s figures, the per-iteration table (markdown and console) and its errors."""

import json
import os
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.plot import TABLE_COLUMNS, _cell, console_iteration_table, iteration_table, load_logs, main, plot_run


FIGURES = ("loglikelihood.png", "advantages.png")  # under `tspin`: no `rewards.png` (the log-likelihoods scaled)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert os.path.getsize(path) > 0, path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    image = pytest.importorskip("PIL.Image")
    with image.open(path) as png:
        assert png.width > 100 and png.height > 100, (path, png.size)


@pytest.fixture
def run_dir(tmp_path, model, tokenizer):
    """A 2-iteration T-SPIN run, with a scorer, in tmp_path/run."""
    output_dir = tmp_path / "run"
    rows = sorting_rows()
    trainer = TSPINTrainer(
        model=model,
        args=make_config(output_dir, num_iterations=2, per_device_train_batch_size=2, beta_first_iteration=0.1),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(sorting_rows(10)[8:]),
        processing_class=tokenizer,
        scorer=lambda texts, rows: sum(len(t) for t in texts) / len(texts),
        scorer_dataset=Dataset.from_list(rows[:2]),
    )
    trainer.train()
    return output_dir, rows


def test_plot_run_and_cli(run_dir, tmp_path, capsys):
    output_dir, rows = run_dir
    written = plot_run(str(output_dir), num_examples=3)
    plots = output_dir / "plots"
    expected = [*FIGURES, "heldout.png", "scores.png", "generations.md", "summary.md"]
    assert sorted(written) == sorted(str(plots / name) for name in expected)
    for name in (*FIGURES, "heldout.png", "scores.png"):
        assert_png(plots / name)

    generations = (plots / "generations.md").read_text()
    assert generations.count("## Example") == 3
    assert "| real | " + _cell(rows[0]["completion"][0]["content"]) + " |" in generations
    assert "| iteration 0 |" in generations and "| iteration 1 |" in generations
    assert "proto (initial policy)" in generations
    summary = (plots / "summary.md").read_text()
    assert summary.startswith("# Summary\n\nOn 2 held-out prompts (`eval`), the log-likelihood of the real responses")
    assert "| start |  |" in summary and "| 0 | 1-4 |" in summary and "| 1 | 5-8 |" in summary
    assert "| likelihood_inversion | score |" in summary and "heldout logp(y)/token" in summary
    assert "Objective `tspin` is reference-free" in summary
    console = console_iteration_table(str(output_dir), width=100)
    assert max(len(line) for line in console.splitlines()) <= 100
    header = console.splitlines()[0].split()
    assert header[:5] == ["iter", "steps", "loss", "logp(y)", "logp(y')"] and "inversion" in header
    assert {"score", "ho:lp/tok"} <= set(header) and console.splitlines()[1].split()[0] == "start"
    assert console.splitlines()[2].split()[:2] == ["0", "1-4"]

    main([str(output_dir), "--out", str(tmp_path / "cli"), "--num_examples", "1"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "cli" / name) for name in expected]
    assert (tmp_path / "cli" / "generations.md").read_text().count("## Example") == 1


def log_line(step, iteration, **metrics):
    return {
        "loss": 0.5,
        "logps/real": -10.0 + step,
        "logps/synthetic": -20.0,
        "self_play/iteration": iteration,
        "step": step,
    } | metrics


def test_checkpoint_fallback_and_skipped_figures(tmp_path):
    history = [log_line(s, s // 3) for s in range(1, 6)] + [{"train_runtime": 1.0, "step": 5}]
    stale = {"global_step": 2, "log_history": history[:2]}
    for directory, state in (("checkpoint-2", stale), ("checkpoint-5", {"global_step": 5, "log_history": history})):
        os.makedirs(tmp_path / directory)
        (tmp_path / directory / "trainer_state.json").write_text(json.dumps(state))

    records, source = load_logs(str(tmp_path))
    assert source == str(tmp_path / "checkpoint-5" / "trainer_state.json")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 5]
    written = plot_run(str(tmp_path), out_dir=str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == ["loglikelihood.png", "summary.md"]
    assert_png(tmp_path / "out" / "loglikelihood.png")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Skipped `advantages.png`" in summary and "Skipped `generations.md`" in summary
    assert "Skipped `heldout.png`" in summary and "No per-iteration records" in summary


def test_resumed_logs_keep_the_last_logging_of_each_step(tmp_path):
    (tmp_path / "self_play").mkdir()
    lines = [log_line(s, 0, loss=1.0) for s in (1, 2, 3)] + [log_line(s, 0, loss=2.0) for s in (2, 3, 4)]
    (tmp_path / "self_play" / "logs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    records, _ = load_logs(str(tmp_path))
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 2.0), (4, 2.0)]


def test_clear_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match="self_play/logs.jsonl"):
        plot_run(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1 and "No training logs" in capsys.readouterr().err

    (tmp_path / "self_play").mkdir()
    (tmp_path / "self_play" / "logs.jsonl").write_text(json.dumps(log_line(1, 0)) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install tspin-trl\[plot\]"):
        plot_run(str(tmp_path))
    assert not (tmp_path / "plots").exists()


def test_cell_escapes_table_syntax():
    assert _cell("a|b\nc\r\nd") == "a\\|b<br>c<br>d"
    assert _cell("<b>*x*</b>") == "\\<b\\>\\*x\\*\\</b\\>"
    assert _cell("  ") == "*(empty)*"


def test_matplotlib_is_imported_lazily_and_the_console_script_declared():
    import ast
    from importlib import metadata

    import tspin_trl.plot

    with open(tspin_trl.plot.__file__) as f:
        top_level = ast.parse(f.read()).body
    imported = [a.name for node in top_level if isinstance(node, ast.Import) for a in node.names]
    imported += [node.module for node in top_level if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name and name.startswith("matplotlib")]
    scripts = metadata.entry_points(group="console_scripts", name="tspin-plot")
    if scripts:  # absent when the package was installed before the script was declared
        assert next(iter(scripts)).value == "tspin_trl.plot:main"


def write_iteration_records(output_dir, records, scores=()):
    """`self_play/iterations.jsonl` and `scores.jsonl` in the layout a run writes (`RunFolder`)."""
    folder = output_dir / "self_play"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "iterations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if scores:
        (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))


def iteration_records(num, steps, value, inversion):
    means = {key.removeprefix("means."): value for key, _ in TABLE_COLUMNS if key.startswith("means.")}
    return [
        {
            "iteration": t,
            "first_step": steps * t + 1,
            "last_step": steps * (t + 1),
            "complete": t < num - 1,
            "means": means,
            "likelihood_inversion": inversion,
            "advantage_vanished": t == 3,
            "advantage_saturated": t != 3,
        }
        for t in range(num)
    ]


def test_console_table_keeps_the_telling_columns_within_the_width(tmp_path):
    scores = [{"label": "start", "score": 0.5}] + [{"label": f"iteration_{t}", "score": 0.25} for t in range(12)]
    # typical values: every column that tells how self-play goes fits in 100 columns
    write_iteration_records(tmp_path / "typical", iteration_records(5, 1563, -78.33, 0.225), scores)
    full = iteration_table(str(tmp_path / "typical"))
    assert max(len(line) for line in full.splitlines()) > 150  # what used to be printed, wrapping in a terminal
    console = console_iteration_table(str(tmp_path / "typical"), width=100)
    lines = console.splitlines()
    assert max(len(line) for line in lines) <= 100, console
    expected = ["iter", "steps", "loss", "logp(y)", "logp(y')", "adv(cur)", "adv(hist)", "inversion", "score"]
    assert lines[0].split() == [*expected, "alarms"]
    assert lines[1].split() == ["start", "0.5"], "before training: the score"
    assert lines[2].split() == ["0", "1-1563", *["-78.33"] * 5, "0.225", "0.25", "saturated"]
    assert lines[5].split()[-1] == "vanished" and lines[6].split()[1] == "6253-7815*"
    legend = " ".join(console.split())
    assert "*: the iteration stopped early" in legend and "not shown for width: logp(y0), acc(cur)," in legend

    # the widest cells: fewer columns, never wider than asked
    write_iteration_records(tmp_path / "wide", iteration_records(12, 100000, -123456.789012, 0.123456), scores)
    for width in (100, 80):
        console = console_iteration_table(str(tmp_path / "wide"), width=width)
        lines = console.splitlines()
        assert max(len(line) for line in lines) <= width, console
        assert lines[0].split()[:5] == ["iter", "steps", "loss", "logp(y)", "logp(y')"]
        assert lines[2 + 11].split()[1] == "1100001-1200000*" and "not shown for" in " ".join(console.split())
    assert console_iteration_table(str(tmp_path / "none")) == iteration_table(str(tmp_path / "none"))


def test_console_table_shows_schedules_and_selection_counts(tmp_path):
    """Settings that change between iterations and prompt-selection counts get short console columns."""
    from tspin_trl.run_folder import RunFolder

    folder = RunFolder(str(tmp_path))
    os.makedirs(os.path.dirname(folder.iterations_path))
    records = [
        {"iteration": t, "first_step": 4 * t + 1, "last_step": 4 * t + 4, "beta": beta, "alpha": 1.0}
        | {"learning_rate": lr, "prompts_kept": kept, "prompts_skipped": 8 - kept, "means": {"loss/per_example": 0.5}}
        for t, (beta, lr, kept) in enumerate([(0.0, 1e-4, 8), (0.1, 5e-5, 6), (0.1, 2.5e-5, 2)])
    ]
    with open(folder.iterations_path, "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    console = console_iteration_table(str(tmp_path), width=100)
    header = console.splitlines()[0].split()
    assert {"beta", "lr", "kept", "skipped"} <= set(header) and "alpha" not in header, console
    assert header[:3] == ["iter", "steps", "loss"], "metrics first, then the settings"
    last = dict(zip(header, console.splitlines()[3].split()))
    assert (last["iter"], last["steps"], last["lr"], last["kept"]) == ("2", "9-12", "2.5e-05", "2"), console


def test_iteration_boundaries_come_from_the_records_when_a_logging_window_spans_one():
    from tspin_trl.plot import _boundaries

    # logging_steps=3 over iterations of 4 steps: the entry at step 6 averages steps 4-6, and is tagged 1
    lines = [{"step": 3, "iteration": 0}, {"step": 6, "iteration": 1}, {"step": 9, "iteration": 2}]
    records = {0: {"first_step": 1}, 1: {"first_step": 5}, 2: {"first_step": 9}}
    assert _boundaries(lines, records) == [(4.5, 1), (8.5, 2)], "before each iteration's first step"
    assert _boundaries(lines, {}) == [(3.5, 1), (6.5, 2)], "without records: after the last entry of the previous one"


def test_rewards_are_drawn_only_for_objectives_with_reference_logps(tmp_path):
    """Under `tspin` the rewards are the log-likelihoods scaled (and never disagree with them): no figure. With a
    reference (`spin`, `tspin_ref`) they differ, and the disagreement share is their second panel."""
    from tspin_trl.run_folder import RunFolder

    folder = RunFolder(str(tmp_path))
    lines = [log_line(s, 0, **{"rewards/real": -1.0 * s, "rewards/disagreement": 0.25}) for s in (1, 2, 3)]
    os.makedirs(folder.iteration_dir(0))
    (tmp_path / "self_play" / "logs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    data, meta = folder.iteration_files(0, "train")
    row = {"index": 0, "prompt": "p", "real": "r", "synthetic": "s"}
    Path(data).write_text(json.dumps(row) + "\n")
    for objective, drawn in (("tspin", False), ("spin", True)):
        Path(meta).write_text(json.dumps({"objective": objective}))
        written = [os.path.basename(p) for p in plot_run(str(tmp_path), out_dir=str(tmp_path / objective))]
        assert ("rewards.png" in written) == drawn, (objective, written)
        assert "disagreement.png" not in written and "inversion.png" not in written
    assert_png(tmp_path / "spin" / "rewards.png")
