"""The repository's shape: the package has no import cycle (type-only imports included), its core does not import the
demo, the self-play callbacks never see the trainer, and iteration arithmetic lives in one module; every module has a
unit test file named after it, and every test file is in a layer (docs/index.md)."""

import ast
import os
import subprocess
import sys
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[2] / "tspin_trl"


def package_imports(path: Path) -> set[str]:
    """Package modules imported by `path`, imports under `if TYPE_CHECKING:` included (a type-only import still ties
    the two modules together for a reader)."""
    tree = ast.parse(path.read_text())
    package_dir = path.parent.relative_to(PACKAGE.parent).as_posix().replace("/", ".")
    if path.name == "__init__.py":
        package_dir = module_name(path)
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package_dir.rsplit(".", node.level - 1)[0] if node.level > 1 else package_dir
        elif node.module and node.module.startswith("tspin_trl"):
            base = ""
        else:
            continue
        module = ".".join(part for part in (base, node.module) if part)
        for alias in node.names:
            candidate = f"{module}.{alias.name}"
            found.add(candidate if _module_path(candidate) else module)
    return {name for name in found if _module_path(name)}


def _module_path(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for path in (PACKAGE.parent / relative.with_suffix(".py"), PACKAGE.parent / relative / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_package_has_no_import_cycle():
    graph = {module_name(path): package_imports(path) for path in PACKAGE.rglob("*.py")}
    graph = {name: {d for d in deps if not name.startswith(d + ".") and d != name} for name, deps in graph.items()}
    # packages import their own modules in __init__; a module importing its package's __init__ would be a cycle
    visiting, done, cycles = set(), set(), []

    def visit(name, trail):
        if name in done:
            return
        if name in visiting:
            cycles.append(trail[trail.index(name) :] + [name])
            return
        visiting.add(name)
        for dep in graph.get(name, ()):
            if dep == "tspin_trl":
                continue  # the top-level package re-exports; modules must not import it (checked below)
            visit(dep, trail + [dep])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [name])
    assert not cycles, cycles
    importers_of_top = [name for name, deps in graph.items() if "tspin_trl" in deps and name != "tspin_trl"]
    assert not [n for n in importers_of_top if n.count(".") == 1], importers_of_top


CALLBACK_MODULES = ("self_play", "monitor.py", "scoring.py")


def callback_files() -> list[Path]:
    return [path for name in CALLBACK_MODULES for path in sorted((PACKAGE / name).glob("*.py")) or [PACKAGE / name]]


def test_callbacks_never_see_the_trainer():
    """The callbacks get the run's narrow surface (`RunContext`), not the trainer: no module of theirs imports the
    trainer, takes a `trainer` argument or reads a `trainer` attribute."""
    for path in callback_files():
        tree = ast.parse(path.read_text())
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
        assert "trainer" not in names, f"{path.name} uses `trainer`"
        assert "tspin_trl.trainer" not in package_imports(path), path.name


# Names whose arithmetic is iteration time: only `clock.py` may compute with them.
TIME_NAMES = {
    "epochs_per_iteration",
    "steps_per_iteration",
    "steps_per_epoch",
    "num_iterations",
    "global_step",
    "epoch",
}


def _time_operands(node: ast.BinOp) -> set[str]:
    found = set()
    for operand in (node.left, node.right):
        for sub in ast.walk(operand):
            name = sub.attr if isinstance(sub, ast.Attribute) else sub.id if isinstance(sub, ast.Name) else None
            if name in TIME_NAMES:
                found.add(name)
    return found


def test_iteration_arithmetic_lives_in_the_clock():
    """No module but `clock.py` computes which iteration a step or epoch belongs to, or where an iteration starts or
    ends: arithmetic (`*`, `//`, `%`, `+`, `-`) on the names of iteration time is found anywhere else."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "clock.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(
                node.op, (ast.Mult, ast.FloorDiv, ast.Mod, ast.Add, ast.Sub)
            ):
                names = _time_operands(node)
                if names:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {sorted(names)}")
    assert not offenders, offenders


def test_the_trainer_core_does_not_import_the_demo():
    code = (
        "import pkgutil, importlib, sys, tspin_trl; "
        "core = [n for _, n, is_pkg in pkgutil.iter_modules(tspin_trl.__path__, 'tspin_trl.') if not is_pkg]; "
        "[importlib.import_module(n) for n in core]; "
        "print(len(core), sorted(m for m in sys.modules if m.startswith('tspin_trl.demo')))"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    count, demo_modules = result.stdout.split(" ", 1)
    assert int(count) >= 8 and demo_modules.strip() == "[]"


# ---- the tests' layout (docs/index.md) -------------------------------------------------------------------------------

TESTS = PACKAGE.parent / "tests"
LAYERS = ("unit", "runs", "launches", "faults")
# Unit files that check the repository as a whole rather than one module.
REPOSITORY_CHECKS = {"test_structure.py", "test_doctests.py", "test_docs.py"}


def unit_test_name(module: Path) -> str:
    """`tests/unit/`'s file for a module: `test_<module>.py`, a subpackage's module with its prefix
    (`self_play/identity.py` -> `test_self_play_identity.py`)."""
    return "test_" + "_".join(module.relative_to(PACKAGE).with_suffix("").parts) + ".py"


def product_modules() -> list[Path]:
    """Every module of the package but `__init__.py` (re-exports) and `__main__.py` (`python -m tspin_trl`, which the
    launches in `tests/launches/test_cli.py` run)."""
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name not in ("__init__.py", "__main__.py"))


def test_every_module_has_a_unit_test_file_named_after_it():
    modules = {path.relative_to(PACKAGE).as_posix(): unit_test_name(path) for path in product_modules()}
    missing = {module: name for module, name in modules.items() if not (TESTS / "unit" / name).is_file()}
    assert not missing, f"modules without a unit test file named after them: {missing}"
    orphans = {path.name for path in (TESTS / "unit").glob("test_*.py")} - set(modules.values()) - REPOSITORY_CHECKS
    assert not orphans, f"tests/unit/ files named after no module of tspin_trl: {sorted(orphans)}"


def test_every_test_file_is_in_a_layer():
    outside = {path.relative_to(TESTS).as_posix() for path in TESTS.rglob("test_*.py")}
    outside = {name for name in outside if name.split("/")[0] not in LAYERS}
    assert not outside, f"test files outside {LAYERS}: {sorted(outside)}"
    for layer in (*LAYERS, "support"):
        assert (TESTS / layer / "__init__.py").is_file(), f"tests/{layer}/ must be a package (unique module names)"


# The run's parts each have one owner after construction: the context replaces its clock and policy and records the
# checkpoint resumed from (`RunContext.start_train`), the clock writes its current iteration (`IterationClock.enter`),
# the sampler reads its batch size from the settings (no writer).
PART_OWNERS = {
    "clock": "context.py",
    "policy": "context.py",
    "resumed_from_checkpoint": "context.py",
    "_current": "clock.py",
    "current": None,
    "batch_size": None,
}


def test_the_runs_parts_are_changed_only_by_their_owners():
    """No module assigns `<x>.clock`, `.policy`, `.resumed_from_checkpoint`, `.current` or `.batch_size` outside an
    `__init__` (where an object sets up its own attributes), except the part's owner."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        inits = {
            id(node)
            for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef) and function.name == "__init__"
            for node in ast.walk(function)
        }
        for node in ast.walk(tree):
            if id(node) in inits or not isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Attribute) and sub.attr in PART_OWNERS:
                        if path.name != PART_OWNERS[sub.attr]:
                            offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{sub.attr}")
    assert not offenders, offenders
