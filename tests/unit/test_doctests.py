"""The `>>>` examples in the package's docstrings run and show what they print.

Every module of `tspin_trl` (and the tests' builders, `tests.support.builders`) is imported and its docstring examples
run with `doctest`, code fences (the ```python lines of TRL-style docstrings) ignored. An example that needs the Hub
or a GPU carries `# doctest: +SKIP` with a comment saying why; `NOT_RUN` lists whole docstrings that cannot run here,
with the reason.
"""

import doctest
import importlib
import pkgutil
import re

import pytest

import tspin_trl


MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(tspin_trl.__path__, "tspin_trl.")) + [
    "tests.support.builders"
]

NOT_RUN = {
    "tspin_trl.trainer.TSPINTrainer": "downloads a model and a dataset from the Hub",
    "tspin_trl.plot.plot_run": "reads the folder of a finished run",
}

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class _FencedDocTestParser(doctest.DocTestParser):
    """Reads examples inside ```python fences: a fence line ends the expected output before it."""

    def parse(self, string: str, name: str = "<string>"):
        return super().parse(re.sub(r"(?m)^[ \t]*```.*$", "", string), name)


def _docstring_tests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(parser=_FencedDocTestParser(), exclude_empty=True)
    return [test for test in finder.find(module, module_name) if test.examples]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    failures = []
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in _docstring_tests(module_name):
        if test.name not in NOT_RUN:
            runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_every_not_run_entry_names_a_docstring_with_examples():
    names = {test.name for module_name in MODULES for test in _docstring_tests(module_name)}
    assert set(NOT_RUN) <= names


def test_a_wrong_example_fails():
    test = _FencedDocTestParser().get_doctest(
        "```python\n>>> 1 + 1\n3\n```\n", globs={}, name="wrong", filename=None, lineno=0
    )
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(test, out=lambda _: None)
    assert runner.failures == 1
