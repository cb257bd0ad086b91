"""The docs are generated (config reference) or run: every shell or Python block in README.md and docs/*.md is
executed here or marked as needing what a test machine lacks.

Markers, on the line before a fence:
- `<!-- docs-test: run -->`: `test_marked_blocks_run` executes the block, from a scratch folder that has the
  repository's `examples/`, with Hub ids swapped for local stand-ins (`HUB_MODELS`, `HUB_DATASETS` below);
- `<!-- needs: hub -->` / `<!-- needs: gpu -->`: not executed (no Hub access, no GPU here);
- `<!-- needs: time, tests/FILE.py ... -->`: minutes of CPU; the named test file runs it or its short form.
Blocks in other languages (json, diff, bibtex, plain) are data, not commands.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_LANGUAGES = {"bash", "sh", "shell", "console", "python", "py"}
MARKER = re.compile(r"^<!-- (docs-test: run|needs: hub|needs: gpu|needs: time, (tests/[\w/]+\.py)\b[^>]*) -->$")
HUB_MODELS = ("Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceH4/zephyr-7b-sft-full")
HUB_DATASETS = {"trl-lib/Capybara": "train", "HuggingFaceH4/ultrachat_200k": "train_sft"}  # id -> its split


def code_blocks(path: Path) -> list[dict]:
    """Fenced blocks of a Markdown file: language, first line number, the marker line before it, the code."""
    blocks, current, previous = [], None, ""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"^```(\S*)\s*$", line)
        if current is None and fence:
            current = {"path": path, "line": number, "language": fence.group(1), "marker": previous, "code": []}
        elif current is not None and line.strip() == "```":
            current["code"] = "\n".join(current["code"]) + "\n"
            blocks.append(current)
            current = None
        elif current is not None:
            current["code"].append(line)
        if line.strip():
            previous = line.strip()
    return blocks


def all_code_blocks() -> list[dict]:
    return [block for path in DOCS for block in code_blocks(path) if block["language"] in CODE_LANGUAGES]


def block_id(block: dict) -> str:
    return f"{block['path'].relative_to(ROOT)}:{block['line']}"


def test_config_reference_is_generated_from_the_dataclass():
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_config_reference.py"), "--check"], cwd=ROOT)
    assert check.returncode == 0, "docs/config.md is out of date: run `python docs/gen_config_reference.py`"


def test_readme_gives_the_two_commands_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_every_code_block_is_run_or_marked():
    problems = []
    for block in all_code_blocks():
        match = MARKER.match(block["marker"])
        if match is None:
            problems.append(f"{block_id(block)}: no marker before the ```{block['language']} block")
        elif match.group(2) and not (ROOT / match.group(2)).is_file():
            problems.append(f"{block_id(block)}: the marker names {match.group(2)}, which does not exist")
    assert not problems, "\n".join(problems) + "\n(see the markers in tests/test_docs.py's docstring)"


def test_markers_are_spelled_right():
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"^<!-- *(docs-test|needs?)\b", line.strip()):
                assert MARKER.match(line.strip()), f"{path.relative_to(ROOT)}:{number}: malformed marker {line!r}"


def test_make_demo_runs_the_command_the_docs_name():
    dry_run = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "demo", "test"], cwd=ROOT, capture_output=True, text=True
    )
    assert dry_run.returncode == 0, dry_run.stderr
    command = "accelerate launch --config_file examples/accelerate_configs/single_process.yaml examples/train.py"
    assert command in dry_run.stdout and "pytest" in dry_run.stdout, dry_run.stdout
    for page in ("README.md", "docs/quickstart.md"):
        assert command in (ROOT / page).read_text(), f"{page} does not say what `make demo` runs"


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, str]:
    """Local replacements for the Hub ids the docs name: the tiny preset, small datasets in the same formats."""
    from tspin_trl.demo import save_tiny_preset

    root = tmp_path_factory.mktemp("stand_ins")
    replacements = {model: str(save_tiny_preset(root / "tiny")) for model in HUB_MODELS}
    for number, (name, split) in enumerate(HUB_DATASETS.items()):
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"sort: {i} 3 1"},
                    {"role": "assistant", "content": " ".join(sorted(f"{i}31"))},
                ]
            }
            for i in range(8)
        ]
        folder = root / f"dataset_{number}"
        (folder / "data").mkdir(parents=True)
        Dataset.from_list(rows).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")  # Hub layout
        replacements[name] = str(folder)
    return replacements


RUN_BLOCKS = [block for block in all_code_blocks() if block["marker"] == "<!-- docs-test: run -->"]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[block_id(block) for block in RUN_BLOCKS])
def test_marked_blocks_run(block, stand_ins, tmp_path):
    code = block["code"]
    for name, local in stand_ins.items():
        code = code.replace(name, local)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"], TSPIN_TRL_MODELS=str(tmp_path / "models"))
    if block["language"] in ("python", "py"):
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
