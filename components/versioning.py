"""Versioning what a retrain produced in git: the ``.dvc`` files of a new dataset version, then
the outputs of the models trained on it (``pipelines/retrain.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit_paths(paths: list[str], message: str) -> str | None:
    """Commit ``paths`` (only them) when the project is a git checkout; returns the commit, or None
    (not a checkout, or nothing new: a rerun)."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    if inside.returncode != 0:
        return None
    paths = [p for p in paths if Path(p).exists() or subprocess.run(
        ["git", "ls-files", "--error-unmatch", p], capture_output=True).returncode == 0]
    subprocess.run(["git", "add", "-A", "--", *paths], check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths]).returncode == 0:
        return None                                   # nothing new (a rerun)
    subprocess.run(["git", "-c", "user.name=defectops-retrain", "-c", "user.email=retrain@defectops.local",
                    "commit", "-q", "-m", message, "--", *paths], check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
