"""The detectors' results as tables a person reads (``defectops report``), from the files the
stages write: ``<metrics>/<model>.json`` (evaluate) and ``<reports>/promotion.json`` (promote).

One row per detector: validation and test mAP50, the test mAP50 gain over the baseline with its
paired-bootstrap 95 % interval, FPS, and, when the evaluation chose an operating point, its test
escape and overkill rates with their intervals; then test AP50 per class, and the promotion
decision. :func:`render` gives the text (every line at most ``width`` columns) and the Markdown.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import tabulate as _tabulate
from tabulate import tabulate

WIDTH = 100


def load_results(metrics_dir: str | Path, models: tuple[str, ...] | list[str],
                 promotion: str | Path) -> tuple[dict[str, dict], dict | None]:
    """``{model: metrics}`` for the models that have a metrics file, and promotion.json (None if absent)."""
    metrics_dir = Path(metrics_dir)
    found = {m: json.loads((metrics_dir / f"{m}.json").read_text()) for m in models
             if (metrics_dir / f"{m}.json").is_file()}
    if not found:
        raise FileNotFoundError(f"no evaluation results in {metrics_dir}/ ({', '.join(f'{m}.json' for m in models)}): "
                                "run `dvc repro` first")
    promotion = Path(promotion)
    return found, json.loads(promotion.read_text()) if promotion.is_file() else None


def _num(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _with_ci(v: Any, ci: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if not ci or None in ci:
        return format(v, fmt)
    return f"{v:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def detector_rows(metrics: dict[str, dict]) -> list[list[str]]:
    """Per detector: name, val mAP50, test mAP50, gain [CI], FPS, escape [CI], overkill [CI]."""
    rows = []
    for model, m in metrics.items():
        gain = m.get("gain_vs_baseline") or {}
        op = (m.get("operating_point") or {}).get("test") or {}
        rows.append([model, _num((m.get("val") or {}).get("mAP50")), _num(m.get("mAP50")),
                     _with_ci(gain.get("mAP50"), gain.get("ci95"), "+.3f"), _num(m.get("fps"), ".1f"),
                     _with_ci(op.get("escape_rate"), op.get("escape_ci95"), ".3f"),
                     _with_ci(op.get("overkill_rate"), op.get("overkill_ci95"), ".3f")])
    return rows


HEADERS = ["detector", "val\nmAP50", "test\nmAP50", "test mAP50 gain\nvs baseline [95 % CI]", "FPS",
           "test escape rate\n[95 % CI]", "test overkill rate\n[95 % CI]"]


def class_rows(metrics: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Test AP50 per class (rows) and detector (columns), classes in the first file's order."""
    classes: list[str] = []
    for m in metrics.values():
        classes += [c for c in m.get("per_class_AP50") or {} if c not in classes]
    return (["class", *metrics],
            [[c, *(_num((m.get("per_class_AP50") or {}).get(c)) for m in metrics.values())] for c in classes])


def promotion_lines(p: dict | None) -> list[str]:
    if p is None:
        return ["promotion: none yet (promotion.json is written by the promote stage)"]
    chosen_on = f" on {p['chosen_on']} {p['metric']}" if p.get("chosen_on") and p.get("metric") else ""
    onnx = (p.get("candidate_test") or {}).get("mAP50")
    return [f"promotion: {p.get('model')} chosen{chosen_on} -> version {p.get('version')}, alias "
            f"'{p.get('alias')}' ({p.get('reason')})"
            + (f"; test mAP50 through the registered ONNX model {onnx:.3f}" if onnx is not None else "")]


def _notes(metrics: dict[str, dict]) -> list[str]:
    notes = []
    devices = sorted({f"batch {m['latency_batch']}, {m['latency_device']}" for m in metrics.values()
                      if m.get("latency_device") and m.get("latency_batch") is not None})
    if devices:
        notes.append(f"FPS: eager PyTorch, {'; '.join(devices)}.")
    if not any((m.get("operating_point") or {}).get("test") for m in metrics.values()):
        notes.append("escape / overkill: no operating point in the metrics files.")
    return notes


def render(metrics: dict[str, dict], promotion: dict | None, width: int = WIDTH) -> tuple[str, str]:
    """The report as text (lines of at most ``width`` columns) and as Markdown."""
    rows = detector_rows(metrics)
    cls_head, cls = class_rows(metrics)
    wrap = [width - 10 * len(metrics)] + [None] * len(metrics)   # a longer class name wraps in its cell
    pad, _tabulate.MIN_PADDING = _tabulate.MIN_PADDING, 0      # columns as wide as their widest cell
    try:
        text_parts = [tabulate(rows, HEADERS, tablefmt="simple", disable_numparse=True, stralign="right",
                               colalign=["left"])]
        if cls:
            text_parts.append(tabulate(cls, [f"test AP50\n{cls_head[0]}", *cls_head[1:]], tablefmt="simple",
                                       disable_numparse=True, stralign="right", colalign=["left"],
                                       maxcolwidths=wrap))
    finally:
        _tabulate.MIN_PADDING = pad
    tail = promotion_lines(promotion) + _notes(metrics)
    text_parts.append("\n".join(line for t in tail for line in textwrap.wrap(t, width, subsequent_indent="  ")))
    text = "\n\n".join(text_parts) + "\n"
    md_head = [h.replace("\n", " ") for h in HEADERS]
    md = ["# Results", "", tabulate(rows, md_head, tablefmt="github", disable_numparse=True)]
    if cls:
        md += ["", "## Test AP50 per class", "", tabulate(cls, cls_head, tablefmt="github", disable_numparse=True)]
    md += ["", *(f"- {t}" for t in tail)]
    return text, "\n".join(md) + "\n"
