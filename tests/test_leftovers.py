"""Nothing left behind (issue 11 item 7): a killed CLI's children die with it; temporary dataset
folders of a killed import are removed by the next import on that root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from components.data.canonical import clean_stale_temps, owner_tag
from conftest import make_image, voc_xml

REPO = Path(__file__).resolve().parents[1]


def test_stale_temporary_folders_are_removed_live_ones_kept(tmp_path):
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".ds.{owner_tag(dead.pid) if psutil.pid_exists(dead.pid) else f'p{dead.pid}t1'}.abcd1234"
    gone_old = tmp_path / f".ds.old.p{dead.pid}t1.abcd1234"
    mine = tmp_path / f".ds.{owner_tag()}.k33p1ng0"          # this process: alive
    untagged_old = tmp_path / ".ds.zz9_ab12"                  # older code's mkdtemp name
    untagged_new = tmp_path / ".ds.zz9_cd34"
    user = tmp_path / ".config"                               # not ours
    for d in (gone, gone_old, mine, untagged_old, untagged_new, user):
        (d / "images").mkdir(parents=True)
    past = time.time() - 3600
    os.utime(untagged_old, (past, past))
    os.utime(user, (past, past))
    removed = clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([gone.name, gone_old.name, untagged_old.name])
    assert mine.is_dir() and untagged_new.is_dir() and user.is_dir() and not gone.exists()


def _voc(src: Path, n: int = 6) -> None:
    for i in range(n):
        make_image(src / "IMAGES" / f"im{i}.jpg", seed=i)
        (src / "ANNOTATIONS").mkdir(parents=True, exist_ok=True)
        (src / "ANNOTATIONS" / f"im{i}.xml").write_text(voc_xml(f"im{i}.jpg", [("scratch", 5, 5, 30, 30)]))


def test_kill_9_of_the_cli_takes_its_children_with_it(tmp_path):
    """The CLI starts Prefect's temporary server (a child process) for its flow; kill -9 the CLI
    while the server runs: the server (checked by PID) is gone within seconds."""
    _voc(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "DEFECTOPS_GUARD")}
    env["DEFECTOPS_CACHE"] = str(tmp_path / "cache")
    cli = subprocess.Popen([sys.executable, "-m", "defectops.cli", "data", "import", str(tmp_path / "src"),
                            "--name", "x", "--root", str(tmp_path / "d")], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(cli.pid)
    server = None
    deadline = time.time() + 240
    while server is None and time.time() < deadline and cli.poll() is None:
        for c in proc.children(recursive=True):
            try:
                if "uvicorn" in " ".join(c.cmdline()):
                    server = c
            except psutil.Error:
                pass
        time.sleep(0.05)
    assert server is not None, "the CLI never started Prefect's temporary server"
    kids = [c for c in proc.children(recursive=True)]
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    _, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, f"left running after kill -9: {[(p.pid, p.name()) for p in alive]}"
