"""The `defectops` command line: help on every subcommand, import through the Prefect flow,
exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_image
from pipelines.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PARAMS = str(REPO / "params.yaml")


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "import"], ["data", "synth"], ["data", "prepare"],
                                  ["data", "split"], ["train"], ["evaluate"], ["export"], ["ablate"], ["predict"],
                                  ["retrain"]])
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
