"""Prefect's own basic authentication, as ``infra/docker-compose.yml`` runs it (issue 32 item 1): a
real ``prefect server start`` on 127.0.0.1 with ``PREFECT_SERVER_API_AUTH_STRING``: the REST API
answers 401 without the string or with a wrong one, the health probe stays open, a client with
``PREFECT_API_AUTH_STRING`` works, and the websocket endpoints (events in, logs out: the ones
prefect#17687 reported as uncovered) close on a missing or wrong token in the pinned 3.8.8.
Started once for the module."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from headless import free_port, stop_group, wait_http

AUTH = "admin:prefect-password-for-tests"      # exists only in this test's server environment


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefect-auth")
    port, log = free_port(), tmp / "prefect.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp / "home"), "PREFECT_SERVER_API_AUTH_STRING": AUTH,
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp}/prefect.db",
                "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api"
        wait_http(f"{url}/health", proc, timeout=180, log=log)        # the probe needs no login
        yield {"url": url, "tmp": tmp}
    finally:
        stop_group(proc)


def _post(url: str, auth: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url, b"{}", headers, method="POST")
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_api_needs_the_auth_string(prefect):
    url = prefect["url"] + "/flows/filter"
    assert _post(url, None) == 401
    assert _post(url, "admin:wrong-password") == 401
    assert _post(url, AUTH) == 200


def test_a_client_with_prefect_api_auth_string_works_and_one_without_does_not(prefect):
    code = ("import asyncio\nfrom prefect.client.orchestration import get_client\n"
            "async def main():\n    async with get_client() as c:\n        print(len(await c.read_work_pools()))\n"
            "asyncio.run(main())\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update({"PREFECT_API_URL": prefect["url"], "PREFECT_HOME": str(prefect["tmp"] / "client")})
    ok = subprocess.run([sys.executable, "-c", code], env={**base, "PREFECT_API_AUTH_STRING": AUTH},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "0", ok.stderr[-2000:]
    refused = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stderr


@pytest.mark.parametrize("path", ["/events/in", "/logs/out"])
def test_the_websockets_close_without_the_token(prefect, path):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = prefect["url"].replace("http://", "ws://") + path
    with pytest.raises(InvalidStatus):                       # no "prefect" subprotocol: refused at the handshake
        with connect(url, open_timeout=10) as ws:
            ws.recv(timeout=10)
    for token in (None, "admin:wrong-password"):
        with connect(url, subprotocols=["prefect"], open_timeout=10) as ws:
            ws.send(json.dumps({"type": "auth", "token": token}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with connect(url, subprotocols=["prefect"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": AUTH}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "auth_success"}
