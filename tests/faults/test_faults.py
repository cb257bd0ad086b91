"""Smoke test of the fault campaign (`python -m tests.faults --quick`): every case classified, and no defect beyond
the ones known and listed in docs/reliability.md."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
# Quick-subset cases classified DEFECT that are known and listed in docs/reliability.md (none: all were fixed).
KNOWN_DEFECTS: set[str] = set()  # every defect the campaign found is fixed (docs/reliability.md)


@pytest.mark.slow
def test_quick_fault_campaign_finds_no_new_defect(tmp_path):
    out = tmp_path / "faults.json"
    env = os.environ | {"TSPIN_TRL_CACHE": str(tmp_path / "cache")}
    subprocess.run(
        [sys.executable, "-m", "tests.faults", "--quick", "--out", str(out)],
        check=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    report = json.loads(out.read_text())
    cases = report["cases"]
    assert len(cases) >= 30
    outcomes = {"clear error", "survived, nothing lost", "warned and recovered", "DEFECT"}
    assert {case["outcome"] for case in cases} <= outcomes
    assert report["totals"]["tried"] == len(cases) == sum(report["totals"][o] for o in outcomes)
    defects = {case["name"] for case in cases if case["outcome"] == "DEFECT"}
    assert defects == KNOWN_DEFECTS, [case for case in cases if case["outcome"] == "DEFECT"]


def test_every_category_has_quick_cases_and_its_own_module():
    """The quick subset samples every category, and each category's cases live in one module of `tests/faults/`."""
    from tests.faults.campaign import load_cases

    cases = load_cases()
    categories = {case.category for case in cases}
    assert {case.category for case in cases if case.quick} == categories
    modules = {case.category: {c.run.__module__ for c in cases if c.category == case.category} for case in cases}
    assert all(len(owners) == 1 for owners in modules.values()), modules
    assert len({case.name for case in cases}) == len(cases)
