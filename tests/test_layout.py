"""The package's shape: no import circles (counting imports inside functions too), modules that fit in a few
screens, and a top level of a handful of modules with the rest in subpackages."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedlearn"
MAX_LINES = 400
TOP_LEVEL = {"__init__.py", "version.py", "errors.py", "registry.py", "app.py", "compose.py", "compare.py",
             "sweep.py", "fetch.py"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The fedlearn modules ``path`` imports anywhere in it (a name imported from a package that is one of its
    modules counts as that module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    found = modules()
    graph = {name: imports(path, set(found)) for name, path in found.items()}
    assert graph["fedlearn.app"] >= {"fedlearn.compose", "fedlearn.config"}  # the analysis sees imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_fit_in_a_few_screens():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_top_level_holds_a_handful_of_modules():
    assert {p.name for p in PACKAGE.glob("*.py")} <= TOP_LEVEL
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "analysis", "bench", "client", "comm", "config", "core", "data", "distributed", "events", "loops", "models",
        "personal", "server",
    }  # fmt: skip
