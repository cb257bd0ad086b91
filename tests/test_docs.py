import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_generated_from_the_dataclass():
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_config_reference.py"), "--check"], cwd=ROOT)
    assert check.returncode == 0, "docs/config.md is out of date: run `python docs/gen_config_reference.py`"


def test_readme_gives_the_two_commands_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
