"""What the ``defectops`` command prints: readable by default, everything in a log file.

Prefect logs every failed task and flow run with its traceback on the console (two tracebacks
for one mistyped path, before the CLI's own ``error:`` line), plus its run bookkeeping at INFO.
``setup`` keeps the console for people: the project's own progress messages (``components``
loggers) and Prefect's warnings, no tracebacks, and the failed-run records left to the CLI's one
``error:`` line. With ``--verbose`` the console shows everything Prefect logs, tracebacks
included. Either way every record, with its traceback, goes to the log file
(``<DEFECTOPS_CACHE or .cache>/logs/defectops.log``, rotated at 5 MB).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path


def log_file() -> Path:
    return Path(os.environ.get("DEFECTOPS_CACHE", Path.cwd() / ".cache")) / "logs" / "defectops.log"


class NoTraceback(logging.Formatter):
    """Format with ``inner`` but without the record's traceback / stack (other handlers still see
    them: the record is restored after formatting)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class ForPeople(logging.Filter):
    """Console filter: Prefect's own records below WARNING and its failed-run records (ERROR from
    the flow / task run loggers: the CLI prints the error once) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        if record.levelno < logging.WARNING:
            return False
        return not (record.levelno == logging.ERROR
                    and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def setup(verbose: bool = False) -> Path:
    """Configure the console as above and add the log file; returns its path. Called by the CLI
    right before it imports a flow (``defectops.cli._flows``), so ``--help`` and argument errors
    never wait for Prefect."""
    import prefect.main  # noqa: F401  (Prefect configures logging when its main module is imported)
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    path = log_file()
    if not any(getattr(h, "_defectops", False) for h in root.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=2, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"))
        fh._defectops = True
        root.addHandler(fh)
        for h in root.handlers:
            if not isinstance(h, PrefectConsoleHandler):
                continue
            if not verbose:
                h.setFormatter(NoTraceback(h.formatter))
                h.addFilter(ForPeople())
    return path
