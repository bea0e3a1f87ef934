"""``benchmarks.common``'s helpers, writing to ``studies/results`` instead of ``benchmarks/results``."""

from __future__ import annotations

from pathlib import Path

from benchmarks import common as _bench
from benchmarks.common import (PROFILE_DIR, SYNTH_WORK, VAL_MAP50, cli, machine, parse_sets,  # noqa: F401
                               profile_params, read_results_csv, synth_data_yaml, timed)

RESULTS = Path(__file__).resolve().parent / "results"
NEU_RUNS = RESULTS / "neu_cpu" / "runs"     # the NEU-DET CPU-protocol runs (studies.neu_cpu writes them)


def write(name: str, payload: dict, table: list[dict], columns: list[str], title: str, notes: str = "") -> Path:
    """``studies/results/<name>.{md,json}`` (``benchmarks.common.write``)."""
    return _bench.write(name, payload, table, columns, title, notes, root=RESULTS)
