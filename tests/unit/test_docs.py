"""The docs are generated (config reference) or run: every shell or Python block in README.md and docs/*.md is
executed here or marked as needing what a test machine lacks.

Markers, on the line before a fence:
- `<!-- docs-test: run -->`: `tests/launches/test_docs_blocks.py` executes the block, from a scratch folder that has
  the repository's `examples/`, with Hub ids swapped for local stand-ins;
- `<!-- needs: hub -->` / `<!-- needs: gpu -->`: not executed (no Hub access, no GPU here);
- `<!-- needs: time, tests/FILE.py ... -->`: minutes of CPU; the named test file runs it or its short form.
Blocks in other languages (json, diff, bibtex, plain) are data, not commands.
"""

import re
import subprocess
import sys

from tests.support.docs import DOCS, MARKER, ROOT, all_code_blocks, block_id


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
    assert not problems, "\n".join(problems) + "\n(see the markers in tests/unit/test_docs.py's docstring)"


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


def test_the_migration_pages_contract_tables_are_the_scripts_output_of_the_committed_results():
    """docs/migration.md shows what `--table` prints from bench/results/: the counts sentence and every row."""
    page = (ROOT / "docs" / "migration.md").read_text()
    for name in ("dpo_contract", "sft_contract"):
        results = ROOT / "bench" / "results" / f"{name}.json"
        printed = subprocess.run(
            [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--table", str(results)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.strip() in page, f"docs/migration.md: paste `python bench/{name}.py --table {results}`"
