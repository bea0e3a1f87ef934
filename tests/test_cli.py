"""The `defectops` command line: help on every subcommand, import through the Prefect flow,
exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_image
from defectops.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PARAMS = str(REPO / "params.yaml")


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "import"], ["data", "synth"], ["data", "prepare"],
                                  ["data", "split"], ["train"], ["evaluate"], ["export"], ["ablate"], ["predict"],
                                  ["retrain"], ["report"], ["data", "profile"], ["serve"], ["monitor"],
                                  ["review"], ["review", "pull"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: defectops" in capsys.readouterr().out


@pytest.fixture()
def tracked(tmp_path, monkeypatch, prefect_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


@pytest.mark.neu
def test_import_neu_det(neu_det, tracked, capsys):
    rc = main(["--params", PARAMS, "data", "import", str(neu_det), "--name", "neu-det",
               "--root", str(tracked / "datasets")])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("1800 images, 4189 boxes, 6 classes (crazing, inclusion, patches, pitted_surface, "
            "rolled-in_scale, scratches), 0 quarantined") in out
    assert (tracked / "datasets" / "neu-det" / "summary.json").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("defectops").experiment_id])[0]
    assert run.info.run_name == "data-import:neu-det" and run.data.metrics["images"] == 1800


def test_import_nothing_usable_exits_1(tracked, capsys):
    src = tracked / "src"
    (src / "ANNOTATIONS").mkdir(parents=True)
    (src / "ANNOTATIONS" / "a.xml").write_text("<annotation><object>")  # malformed
    make_image(src / "IMAGES" / "a.jpg", seed=0)
    rc = main(["--params", PARAMS, "data", "import", str(src), "--name", "x", "--root", str(tracked / "d")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nothing usable" in err and "quarantine.md" in err


def test_import_missing_source_exits_nonzero(tracked, capsys):
    rc = main(["--params", PARAMS, "data", "import", str(tracked / "missing"), "--name", "x",
               "--root", str(tracked / "d")])
    assert rc == 1 and "source folder not found" in capsys.readouterr().err


def test_missing_params_file_is_a_clear_error(tmp_path, capsys):
    rc = main(["--params", str(tmp_path / "none.yaml"), "data", "split"])
    assert rc == 2 and "params file not found" in capsys.readouterr().err


def _cli(args: list[str], tmp: Path, api_url: str) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DEFECTOPS_CACHE": str(tmp / "cache"), "PREFECT_API_URL": api_url}
    r = subprocess.run([sys.executable, "-m", "defectops.cli", "--params", PARAMS, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def test_a_failing_flow_ends_with_one_error_line_and_logs_the_traceback(tracked):
    """The flow raises (a folder of neither format): the console shows one `error:` line, no
    Prefect traceback; the log file has it; --verbose shows it."""
    from prefect.settings import PREFECT_API_URL

    src = tracked / "odd"
    src.mkdir()
    (src / "notes.txt").write_text("not a dataset")
    args = ["data", "import", str(src), "--name", "x", "--root", str(tracked / "d")]
    rc, out = _cli(args, tracked, PREFECT_API_URL.value())
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert rc == 1
    assert lines[-1].startswith("error: ") and "cannot tell the format" in lines[-1]
    assert "Traceback" not in out and sum("error" in ln.lower() for ln in lines) == 1, out
    log = (tracked / "cache" / "logs" / "defectops.log").read_text()
    assert "Traceback" in log and "cannot tell the format" in log
    rc, out = _cli(["--verbose", *args], tracked, PREFECT_API_URL.value())
    assert rc == 1 and "Traceback" in out and out.rstrip().splitlines()[-1].startswith("error: ")


def test_an_unexpected_exception_is_one_line_with_where_the_traceback_is(monkeypatch, capsys):
    import defectops.cli as cli

    def boom(a):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "_data_split", boom)
    assert cli.main(["--params", PARAMS, "data", "split"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: RuntimeError: disk on fire (traceback: --verbose") and "\n" not in err
    with pytest.raises(RuntimeError):
        cli.main(["--params", PARAMS, "--verbose", "data", "split"])
