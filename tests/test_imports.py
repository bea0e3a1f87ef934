"""No import cycle among ``components`` and ``pipelines`` (function-local imports included), and
no flow module imports another flow module: flows share ``pipelines.common`` / ``pipelines.tasks``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "pipelines")
NOT_FLOWS = {"pipelines.common", "pipelines.tasks", "pipelines.console", "pipelines.guard", "pipelines.trial",
             "pipelines.profile_args", "pipelines", "pipelines.cli"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    files = {_module(f): f for pkg in PACKAGES for f in (REPO / pkg).rglob("*.py")}
    g = {m: set() for m in files}
    for m, f in files.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for n in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    base = ".".join(up + ([n.module] if n.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in n.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != m and t in files:
                    g[m].add(t)
    return g


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    g = graph()
    assert "pipelines.tasks" in g["pipelines.train"]                  # the graph sees imports
    assert _cycle(g) is None, " -> ".join(_cycle(g))


def test_no_flow_imports_another_flow():
    g = graph()
    flows = {m for m in g if m.startswith("pipelines.") and m not in NOT_FLOWS}
    bad = {m: sorted(g[m] & flows) for m in flows if g[m] & flows}
    assert not bad, bad


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
