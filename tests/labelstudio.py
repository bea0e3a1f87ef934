"""A Label Studio server for the tests: ``label-studio start`` from its own virtual environment
(``.venv-labelstudio``, installed by ``tests/ensure_labelstudio.sh``; its pins clash with the
project's) as a real subprocess on 127.0.0.1 and a free port, its data (SQLite, uploads) in a
temporary folder, always stopped (its whole process group).

The user and the keys are made without a person: ``--username`` / ``--password`` create the
admin, ``--user-token`` sets its legacy token and ``--enable-legacy-api-token`` lets the
organisation accept it (Label Studio >= 1.17 turns legacy tokens off by default); that token then
asks ``POST /api/token/`` for a personal access token, the kind a production server hands out.
The database starts as a copy of the migrated empty one the install script left (about 5 s to
answer instead of 30 s of migrations; without it the server migrates its own).

Where ``.venv-labelstudio`` is missing the fixture skips with one line saying how to install it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from headless import free_port, stop_group, wait_http

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-labelstudio"
SERVER = VENV / "bin" / "label-studio"
TEMPLATE = VENV / "template" / "label_studio.sqlite3"
USER = "reviewer@example.com"
# Label Studio reads its settings from LABEL_STUDIO_<NAME>, HEARTEX_<NAME> and bare <NAME>: none of
# the caller's may reach the test server (a DJANGO_DB or POSTGRE_HOST would point it at a real database)
DROPPED = ("DJANGO_DB", "DATABASE_NAME", "BASE_DATA_DIR", "USERNAME", "PASSWORD", "USER_TOKEN", "HOST", "PORT",
           "DEBUG", "LOG_LEVEL", "SENTRY_DSN", "FRONTEND_SENTRY_DSN", "POSTGRE_NAME", "POSTGRE_USER",
           "POSTGRE_PASSWORD", "POSTGRE_HOST", "POSTGRE_PORT", "LOCAL_FILES_SERVING_ENABLED",
           "LOCAL_FILES_DOCUMENT_ROOT", "REDIS_LOCATION")


@dataclass
class LabelStudio:
    url: str                       # http://127.0.0.1:<port>
    api_key: str                   # a personal access token (JWT refresh token)
    legacy_token: str              # the admin's legacy token
    user: str                      # the admin's e-mail (who "reviews" in the tests)
    password: str                  # the admin's password (the browser test logs in with it)
    startup_s: float
    log: Path


def server_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABEL_STUDIO_", "HEARTEX_")) and k not in DROPPED}
    return {**env, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite", "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _personal_token(url: str, legacy: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"{url}/api/token/", method="POST", headers={"Authorization": f"Token {legacy}"})
    with opener.open(req, timeout=30) as r:
        return json.loads(r.read())["token"]


@contextmanager
def label_studio_server(tmp: Path, timeout: float = 240) -> Iterator[LabelStudio]:
    """Label Studio on 127.0.0.1 (a free port), data under ``tmp``; stopped on exit."""
    if not SERVER.is_file():
        pytest.skip(f"Label Studio is not installed in {VENV.name} (bash tests/ensure_labelstudio.sh installs it)")
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    if TEMPLATE.is_file():
        shutil.copy2(TEMPLATE, data / TEMPLATE.name)
    port, legacy, password = free_port(), secrets.token_hex(20), secrets.token_hex(16)     # never starts with '-' (a CLI flag)
    url = f"http://127.0.0.1:{port}"
    log = tmp / "label-studio.log"
    cmd = [str(SERVER), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data), "--username", USER, "--password", password, "--user-token", legacy,
           "--enable-legacy-api-token", "--log-level", "WARNING"]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, env=server_env(data), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"{url}/api/version", proc, timeout=timeout, log=log)
        yield LabelStudio(url, _personal_token(url, legacy), legacy, USER, password, time.monotonic() - t0, log)
    finally:
        stop_group(proc)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudio]:
    """One Label Studio server for the session (import this fixture into a test module)."""
    with label_studio_server(tmp_path_factory.mktemp("labelstudio")) as ls:
        yield ls
