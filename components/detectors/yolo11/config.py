"""YOLO11's model config: ultralytics' own ``yolo11{n,s,m,l,x}.yaml`` (it ships inside
ultralytics, so nothing is downloaded)."""

from __future__ import annotations

SCALES = ("n", "s", "m", "l", "x")      # the one list (params.yaml baseline.scale is one of these)


def baseline_cfg(scale: str) -> str:
    """The model YAML ultralytics resolves by name for YOLO11 at ``scale``."""
    if scale not in SCALES:
        raise ValueError(f"baseline.scale must be one of {', '.join(SCALES)} (got '{scale}')")
    return f"yolo11{scale}.yaml"
