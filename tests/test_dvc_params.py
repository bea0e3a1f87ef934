"""dvc.yaml declares every param a stage reads, so DVC re-runs the stage when one changes.

The reads are derived from the code: the attribute chains on the parsed settings
(``params.lam.alpha`` -> ``lam.alpha``; ``components.settings``) and ``params.get("a.b")`` calls of
the stage's flow function and of every project function it calls (followed through ``pipelines``
imports). A method of the settings (``params.lam.plain()``, ``params.override(...)``) ends the
chain at its section.
``paths.*`` and ``data.name`` name where things live (the stage's deps and outs interpolate them)
and ``tracking`` names the MLflow server: none changes what a stage computes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FLOW = {"data": "data.prepare_flow", "split": "data.split_flow", "train_baseline": "train.train_flow",
        "train_dasc": "train.train_flow", "train_lagnet": "train.train_flow", "tune_dasc": "tune.tune_flow",
        "tune_lagnet": "tune.tune_flow", "lam": "lam.lam_flow", "evaluate": "evaluate.evaluate_flow",
        "evaluate_lagnet": "evaluate.evaluate_flow", "promote": "promote.promote_flow"}
# reads behind a model switch that this stage's model never takes
NOT_FOR = {"train_baseline": {"lam.alpha", "lam.beta"}, "train_dasc": {"lam.alpha", "lam.beta"},
           "tune_dasc": {"lam.alpha", "lam.beta"}, "evaluate": {"lam", "lam.alpha", "lam.beta"}}
IGNORED = ("paths", "tracking", "data.name")


def _modules() -> dict[str, tuple[dict[str, ast.FunctionDef], dict[str, tuple[str, str]]]]:
    out = {}
    for f in (REPO / "pipelines").glob("*.py"):
        tree = ast.parse(f.read_text())
        funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        imports = {}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module:
                for a in n.names:
                    imports[a.asname or a.name] = (n.module, a.name)
        out[f.stem] = (funcs, imports)
    return out


METHODS = {"plain", "get", "override", "overrides", "overrides_record", "ultralytics"}


def _chain(node: ast.Attribute) -> list[str] | None:
    """``params.a.b`` -> ``["a", "b"]``; None when the chain is not rooted at the name ``params``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not (isinstance(node, ast.Name) and node.id == "params"):
        return None
    return parts[::-1]


def _settings_reads(fn: ast.FunctionDef) -> set[str]:
    found, inner = set(), set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute):
            inner.add(id(n.value))               # only the outermost node of each chain counts
    for n in ast.walk(fn):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" \
                and _chain(n.func) == ["get"] and n.args and isinstance(n.args[0], ast.Constant):
            found.add(n.args[0].value)            # params.get("a.b")
        if not isinstance(n, ast.Attribute) or id(n) in inner:
            continue
        parts = _chain(n)
        if parts:
            while parts and parts[-1] in METHODS:
                parts.pop()
            if parts:
                found.add(".".join(parts))
    return found


def reads(entry: str) -> set[str]:
    mods = _modules()
    seen, todo, found = set(), [tuple(entry.split("."))], set()
    while todo:
        mod, name = todo.pop()
        if (mod, name) in seen or mod not in mods or name not in mods[mod][0]:
            continue
        seen.add((mod, name))
        funcs, imports = mods[mod]
        found |= _settings_reads(funcs[name])
        for n in ast.walk(funcs[name]):
            if not isinstance(n, ast.Call):
                continue
            callee = n.func.id if isinstance(n.func, ast.Name) else None
            if callee in funcs:
                todo.append((mod, callee))
            elif callee in imports:
                todo.append(imports[callee])
    return {r for r in found if not any(r == i or r.startswith(i + ".") for i in IGNORED)}


def _declared(stage: dict) -> list[str]:
    return [str(p) for p in stage.get("params", [])]


def _stages() -> dict[str, dict]:
    d = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {k: (v["do"] if "foreach" in v else v) for k, v in d.items()}


@pytest.mark.parametrize("stage", sorted(FLOW))
def test_dvc_yaml_declares_what_the_stage_reads(stage):
    declared = _declared(_stages()[stage])
    need = reads(FLOW[stage]) - NOT_FOR.get(stage, set())
    missing = sorted(r for r in need if not any(r == d or r.startswith(d + ".") for d in declared))
    assert not missing, f"dvc.yaml stage {stage} reads params it does not declare: {missing}"


def test_the_derivation_sees_reads():
    """The walk follows calls: train_flow reaches loss.iou and the LAM blend (lagnet)."""
    r = reads("train.train_flow")
    assert {"loss.iou", "lam.alpha", "retrain.warm_start"} <= r
    assert {"export", "lam"} <= reads("promote.promote_flow")              # through the export flow
