"""``make run PROFILE=...`` (``defectops.profile_args --run``): the run uses the profiles' values
and records them (experiment commit, dvc.lock), and params.yaml keeps its bytes. On a throwaway
git + DVC project with one one-line stage, not the pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from defectops.profile_args import main, merged_overrides, run_profiles

REPO = Path(__file__).resolve().parents[1]
STAGE = ("import json, yaml; p = yaml.safe_load(open('params.yaml')); "
         "json.dump({'epochs': p['train']['epochs'], 'classes': p['data']['classes']}, open('used.json', 'w'))")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def project(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("needs git")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "p"
    (repo / "profiles").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    (repo / "stage.py").write_text(STAGE + "\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["train.epochs", "data.classes"],
        "outs": ["used.json"]}}}))
    (repo / "profiles" / "a.yaml").write_text("train.epochs: 7\ndata.classes: [hole, long_scratch_name]\n")
    (repo / "profiles" / "b.yaml").write_text("train.epochs: 2\n")
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    return repo


def test_profile_run_keeps_params_bytes_and_records_values(project):
    before = (project / "params.yaml").read_bytes()
    assert run_profiles(["a", "b"], project) == 0
    assert (project / "params.yaml").read_bytes() == before
    used = json.loads((project / "used.json").read_text())
    assert used == {"epochs": 2, "classes": ["hole", "long_scratch_name"]}      # b wins on train.epochs
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["s"]["params"]["params.yaml"]
    assert lock == {"train.epochs": 2, "data.classes": ["hole", "long_scratch_name"]}
    refs = _git(project, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    exp = [r for r in refs if r.rsplit("/", 1)[-1].startswith("a-b-")]
    assert len(exp) == 1
    recorded = yaml.safe_load(_git(project, "show", f"{exp[0]}:params.yaml"))
    assert recorded["train"]["epochs"] == 2 and recorded["data"]["classes"] == ["hole", "long_scratch_name"]


def test_failed_profile_run_still_restores_params(project):
    (project / "stage.py").write_text("raise SystemExit(3)\n")
    before = (project / "params.yaml").read_bytes()
    assert run_profiles(["a"], project) != 0
    assert (project / "params.yaml").read_bytes() == before


def test_bad_profile_stops_before_dvc(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.no_such_key: 1\n")
    assert main(["--run", str(bad)]) == 2
    assert capsys.readouterr().err == "error: params.yaml has no key 'train.no_such_key'\n"
    assert main(["--run", "no-such-profile"]) == 2
    assert "profile not found: profiles/no-such-profile.yaml" in capsys.readouterr().err


def test_later_profile_wins():
    o = merged_overrides([REPO / "profiles" / "neu-cpu.yaml", REPO / "profiles" / "smoke.yaml"],
                         REPO / "params.yaml")
    assert o["train.epochs"] == 2 and o["train.imgsz"] == 224 and o["data.name"] == "neu-det"
