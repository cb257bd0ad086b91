"""The package's shape: no import cycle, and the self-play callbacks use the trainer's public surface only."""

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "tspin_trl"


def runtime_imports(path: Path) -> set[str]:
    """Package modules imported by `path` when it runs (imports under `if TYPE_CHECKING:` only serve type hints)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    package_dir = path.parent.relative_to(PACKAGE.parent).as_posix().replace("/", ".")
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            base = package_dir
        elif node.level == 2:
            base = package_dir.rsplit(".", 1)[0]
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
    graph = {module_name(path): runtime_imports(path) for path in PACKAGE.rglob("*.py")}
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


def test_callbacks_touch_no_private_trainer_member():
    for name in ("self_play.py", "monitor.py", "scoring.py", "vllm_backend.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        private = [
            f"{name}:{node.lineno} trainer.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and (
                (isinstance(node.value, ast.Name) and node.value.id == "trainer")
                or (isinstance(node.value, ast.Attribute) and node.value.attr == "trainer")
            )
        ]
        assert not private, private
