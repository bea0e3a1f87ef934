"""Test helpers for the browser tests (``tests/test_ui_browser.py``): a web server started as a
real subprocess and always stopped, and headless Chromium driven over the Chrome DevTools
protocol (``--remote-debugging-pipe``: JSON messages on file descriptors 3 and 4, no websocket
library, no debugging port). Only the standard library."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """Debian's ``chromium`` (or ``chromium-browser``) on PATH, or None."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()                                  # reap the leader if it is done
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group that ``proc`` leads (started with ``start_new_session``), then
    SIGKILL whatever is left of it after ``grace`` seconds; the leader is reaped."""
    deadline = time.monotonic() + grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(0.2)
        deadline = time.monotonic() + 5
    proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Wait until ``url`` answers 200, failing early if ``proc`` exits."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))    # never through an http_proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered:\n{tail}")
        try:
            with opener.open(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


class Browser:
    """Headless Chromium, one page, driven over the DevTools protocol through a pipe.

    ``open(url, texts)`` loads a page and waits until its visible text holds every string of
    ``texts`` (a single-page app renders after the load event); ``screenshot(path)`` writes a PNG
    of the viewport. Close with ``close()`` (or use as a context manager): the browser's process
    group is killed."""

    def __init__(self, width: int = 1400, height: int = 900):
        exe = chromium_path()
        if exe is None:
            raise FileNotFoundError("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="defectops-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--mute-audio", "--no-proxy-server", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"]
        # the DevTools pipe must be descriptors 3 (commands in) and 4 (replies out) of the browser
        script = f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        with open(Path(self.profile) / "chromium.log", "wb") as err:
            self.proc = subprocess.Popen(["bash", "-c", script, "chromium", *args],
                                         pass_fds=(to_chrome_r, from_chrome_w), start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.session = None
        self.width, self.height = width, height
        try:
            targets = self.call("Target.getTargets", timeout=90, session=False)["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                     session=False)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # -- protocol

    def _send(self, msg: dict) -> None:
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data):]

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                log = Path(self.profile) / "chromium.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"chromium closed the DevTools pipe (exit code {self.proc.poll()}):\n{tail}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, timeout: float = 30, session: bool = True) -> dict:
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self._send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    # -- pages

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def open(self, url: str, texts: tuple[str, ...] = (), timeout: float = 45) -> str:
        """Navigate to ``url`` and wait until the page's visible text holds every one of ``texts``;
        returns that text (on timeout: TimeoutError naming what was missing and what was shown)."""
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while True:
            shown = self.text()
            missing = [t for t in texts if t not in shown]
            if not missing and self.evaluate("document.readyState") == "complete":
                return shown
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: {missing} not shown within {timeout:.0f} s; the page shows:\n"
                                   f"{shown[:2000]}")
            time.sleep(0.3)

    def click(self, selector: str) -> bool:
        """Click the first element matching the CSS ``selector``; False when there is none."""
        return bool(self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                                  f" if (e) e.click(); return !!e; }})()"))

    def click_text(self, text: str) -> bool:
        """Click the innermost element whose visible text is exactly ``text``; False when there is none."""
        return bool(self.evaluate(f"""(() => {{
            const hits = [...document.querySelectorAll('body *')]
                .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
            const e = hits.find(h => !hits.some(o => o !== h && h.contains(o)));
            if (e) e.click(); return !!e; }})()"""))

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        stop_group(self.proc, grace=3)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
