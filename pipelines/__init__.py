"""Prefect flows, one per DVC stage (thin: they read params.yaml and call ``components``).

Without ``PREFECT_API_URL`` Prefect starts a temporary local server per flow run (its SQLite
database under ``.prefect/`` in the project); set ``PREFECT_API_URL`` to use a real server.
"""

from __future__ import annotations

import os
from pathlib import Path

import components  # noqa: F401  (offline environment for ultralytics)

for _k, _v in {
    "PREFECT_HOME": str(Path.cwd() / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "components",
    # the temporary server needs more than Prefect's 20 s on a machine busy training
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_k, _v)
