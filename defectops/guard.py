"""Nothing left behind: every process a ``defectops`` command starts dies with it.

Prefect's temporary API server, ``dvc`` children of ``retrain`` and the like are child processes;
when the CLI is killed (``kill -9`` included) they would be orphaned and keep running. ``start``
tags the CLI's environment with a token (inherited by every process it starts, grandchildren
included) and starts a small guardian in its own session that holds the read end of a pipe whose
write end only the CLI holds. When the CLI is gone, however it died, the pipe reaches EOF and the
guardian terminates (then kills) every process carrying the token. Linux/macOS (psutil).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

TOKEN_ENV = "DEFECTOPS_GUARD"

GUARDIAN = r"""
import os, sys
token, env_key = sys.argv[1], sys.argv[2]
sys.stdin.buffer.read()                      # EOF: the command that started us is gone
import psutil
victims = []
for p in psutil.process_iter():
    if p.pid == os.getpid():
        continue
    try:
        if p.environ().get(env_key) == token:
            victims.append(p)
    except (psutil.Error, OSError):
        pass
for p in victims:
    try:
        p.terminate()
    except psutil.Error:
        pass
_, alive = psutil.wait_procs(victims, timeout=5)
for p in alive:
    try:
        p.kill()
    except psutil.Error:
        pass
"""

_write_ends: list[int] = []


def start() -> str:
    """Guard this process's children (idempotent); returns the token."""
    current = os.environ.get(TOKEN_ENV, "")
    if current.startswith(f"{os.getpid()}:"):
        return current
    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    r, w = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    subprocess.Popen([sys.executable, "-c", GUARDIAN, token, TOKEN_ENV], stdin=r, env=env,
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(r)
    os.set_inheritable(w, False)      # no child may hold the write end, or EOF would never come
    _write_ends.append(w)
    os.environ[TOKEN_ENV] = token
    return token
