"""The stop a user can act on: a run ends with one line saying why (the CLI prints it, exit 1).
Config mistakes have their own error, ``components.settings.ConfigError`` (exit 2)."""

from __future__ import annotations


class StopError(RuntimeError):
    """A run stopped for a reason the user can act on (a source that cannot be imported, an ONNX
    export that disagrees with PyTorch): the CLI prints it as one line and exits 1."""
