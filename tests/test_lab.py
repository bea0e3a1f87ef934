"""The lab apart from the product: ``benchmarks/`` (reusable measurements) and ``studies/`` (one-off
studies) are listed in their READMEs, the product never imports either, the measurements never
import a study, and the weight files a table or test loads are in the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("components", "pipelines", "defectops")
KEPT_WEIGHTS = ("cpu-base-mosaic", "cpu-dasc-paper", "cpu-dasc-proto-s0", "cpu-lagnet-s-60")


def _imports(f: Path) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and not n.level and n.module:
            out.add(n.module)
    return out


def _runnable(folder: str) -> set[str]:
    """Modules of ``folder`` run as ``python -m folder.X``."""
    return {f.stem for f in (REPO / folder).glob("*.py") if 'if __name__ == "__main__":' in f.read_text()}


def test_the_product_imports_neither_benchmarks_nor_studies():
    bad = [f"{f.relative_to(REPO)}: {m}" for pkg in PRODUCT for f in (REPO / pkg).rglob("*.py")
           for m in _imports(f) if m.split(".")[0] in ("benchmarks", "studies")]
    assert not bad, bad


def test_benchmarks_never_import_a_study():
    bad = [f"{f.name}: {m}" for f in (REPO / "benchmarks").glob("*.py") for m in _imports(f)
           if m.split(".")[0] == "studies"]
    assert not bad, bad


def test_every_benchmark_and_study_is_listed_with_its_command():
    for folder in ("benchmarks", "studies"):
        readme = (REPO / folder / "README.md").read_text()
        listed = set(re.findall(rf"python -m {folder}\.(\w+)", readme))
        assert listed == _runnable(folder), (folder, listed ^ _runnable(folder))


def test_the_weights_a_table_or_test_loads_are_in_the_tree_and_new_ones_stay_out_of_git():
    kept = Path("studies/results/neu_cpu/weights")
    assert [w for w in KEPT_WEIGHTS if not (REPO / kept / f"{w}.pt").is_file()] == []
    table = (REPO / "studies" / "neu_operating_point.py").read_text()
    assert all(w in table for w in KEPT_WEIGHTS)          # the operating-point table scores these four
    ignore = (REPO / ".gitignore").read_text().splitlines()
    assert f"{kept.as_posix()}/*.pt" in ignore and all(f"!{kept.as_posix()}/{w}.pt" in ignore for w in KEPT_WEIGHTS)
