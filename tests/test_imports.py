"""No import cycle among ``components``, ``pipelines`` and ``defectops`` (function-local imports
included); no flow module imports another flow module: flows share ``pipelines.common`` /
``pipelines.tasks``; the layers point one way: ``defectops`` (the command line) may import the
flows and the components, ``pipelines`` the components, and ``components`` neither of the others."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "pipelines", "defectops")
NOT_FLOWS = {"pipelines.common", "pipelines.tasks", "pipelines.trial", "pipelines"}
# each package and the packages it must never import (the layers: defectops -> pipelines -> components)
FORBIDDEN = {"components": ("pipelines", "defectops"), "pipelines": ("defectops",)}


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


def _violations(g: dict[str, set[str]]) -> dict[str, list[str]]:
    """Module -> the modules it imports across a layer the wrong way (``FORBIDDEN``)."""
    out = {}
    for m, targets in g.items():
        bad = sorted(t for t in targets if t.split(".")[0] in FORBIDDEN.get(m.split(".")[0], ()))
        if bad:
            out[m] = bad
    return out


def test_the_layers_point_one_way():
    g = graph()
    assert "defectops.console" in g["defectops.cli"] and "pipelines.common" in g["defectops.optuna_ui"]  # sees them
    assert _violations(g) == {}


def test_a_layer_violation_is_found():
    g = {"components.x": {"pipelines.common", "components.y"}, "pipelines.common": {"components.y"},
         "pipelines.flow": {"defectops.cli"}, "defectops.cli": {"pipelines.common", "components.y"}}
    assert _violations(g) == {"components.x": ["pipelines.common"], "pipelines.flow": ["defectops.cli"]}


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


FORK_IMPORTS = r'''
import importlib, os, sys, traceback
for lib in ("torch", "torchvision", "ultralytics", "prefect", "mlflow", "optuna", "onnxruntime", "dvc"):
    try:                                     # third-party only: no project module is loaded before the fork
        importlib.import_module(lib)
    except ImportError:
        pass
assert not any(m.split(".")[0] in ("components", "pipelines", "defectops") for m in sys.modules)
failed = 0
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                             # the child: this module first, alone
        os.close(r)
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            os.write(w, traceback.format_exc()[-1500:].encode())
            os._exit(1)
    os.close(w)
    err = os.read(r, 4000).decode()
    os.close(r)
    if os.waitpid(pid, 0)[1] != 0:
        failed += 1
        print(f"--- {name}\n{err}")
sys.exit(1 if failed else 0)
'''


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module of ``components``, ``pipelines`` and ``defectops`` imported first and alone, in an interpreter
    that has imported nothing of the project (a child forked from one that only preloaded the
    heavy third-party libraries, so a module costs its own import only): a cycle that function-
    local imports hide from the AST graph, or a module that works only when another was imported
    before it, fails here."""
    import subprocess
    import sys

    modules = sorted(m for m in graph() if m not in PACKAGES)
    assert len(modules) > 40
    p = subprocess.run([sys.executable, "-c", FORK_IMPORTS, *modules], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
