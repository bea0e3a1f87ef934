"""defectops building blocks (no orchestration here: see ``pipelines/``).

Importing the package makes ultralytics offline-safe before anything imports it: no weight,
font or package downloads (``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL``), and its settings file
lives inside the project (``.cache/ultralytics``) instead of the user's home. Values already
set in the environment win.
"""

from __future__ import annotations

import os
from pathlib import Path

_CACHE = Path(os.environ.get("DEFECTOPS_CACHE", Path.cwd() / ".cache"))
for _k, _v in {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "YOLO_CONFIG_DIR": str(_CACHE / "ultralytics"),
    "MPLCONFIGDIR": str(_CACHE / "matplotlib"),
    "MPLBACKEND": "Agg",
}.items():
    os.environ.setdefault(_k, _v)

__version__ = "0.1.0"
