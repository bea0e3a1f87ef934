"""The shape of the product's code (issue 30): the functions of ``components/`` and ``pipelines/``
that take more than 7 parameters, and the Prefect flows longer than 40 lines.

    python benchmarks/code_shape.py [--max-params 7] [--max-flow-lines 40] [ROOT]

Parameters: every named one (positional, keyword-only, ``*args`` / ``**kwargs``), ``self`` and
``cls`` left out. A flow: a function decorated with Prefect's ``@flow`` (``flow`` or ``flow(...)``);
its length: from its ``def`` line to its last line, decorators not counted. Exit 0 always (a
measurement, not a gate); the last lines give the widest signature and the longest flow.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = ("components", "pipelines")


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return [n for n in names if n not in ("self", "cls")]


def _is_flow(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if name == "flow":
            return True
    return False


def measure(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """``(params, name)`` of every function and ``(lines, name)`` of every flow, widest / longest first."""
    funcs, flows = [], []
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            for n in ast.walk(ast.parse(f.read_text(), rel)):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    where = f"{rel}:{n.lineno} {n.name}"
                    funcs.append((len(_params(n)), where))
                    if _is_flow(n):
                        flows.append((n.end_lineno - n.lineno + 1, where))
    return sorted(funcs, key=lambda x: (-x[0], x[1])), sorted(flows, key=lambda x: (-x[0], x[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--max-params", type=int, default=7)
    ap.add_argument("--max-flow-lines", type=int, default=40)
    a = ap.parse_args(argv)
    funcs, flows = measure(Path(a.root))
    wide = [x for x in funcs if x[0] > a.max_params]
    long = [x for x in flows if x[0] > a.max_flow_lines]
    print(f"functions with more than {a.max_params} parameters: {len(wide)}")
    for n, where in wide:
        print(f"  {n:3d}  {where}")
    print(f"flows longer than {a.max_flow_lines} lines: {len(long)} (of {len(flows)} flows)")
    for n, where in long:
        print(f"  {n:3d}  {where}")
    if funcs:
        print(f"widest signature: {funcs[0][0]} parameters ({funcs[0][1]})")
    if flows:
        print(f"longest flow: {flows[0][0]} lines ({flows[0][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
