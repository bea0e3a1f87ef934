"""Small, shared result-table writer (markdown + JSON) for ablations and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(path_stem: str | Path, title: str, preamble: str, rows: list[dict], columns: list[str],
                payload: dict) -> tuple[Path, Path]:
    """Write ``<stem>.md`` (title, preamble, table) and ``<stem>.json`` (``payload``)."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    md.write_text(f"# {title}\n\n{preamble}\n\n{markdown_table(rows, columns)}")
    js.write_text(json.dumps(payload, indent=2))
    return md, js
