"""The fenced code blocks of README.md and docs/*.md, and the markers before them (see `tests/unit/test_docs.py`)."""

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_LANGUAGES = {"bash", "sh", "shell", "console", "python", "py"}
MARKER = re.compile(r"^<!-- (docs-test: run|needs: hub|needs: gpu|needs: time, (tests/[\w/]+\.py)\b[^>]*) -->$")


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
