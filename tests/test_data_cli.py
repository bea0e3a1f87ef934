"""What the data commands print: paths that are valid from where the command runs."""

from __future__ import annotations

from pathlib import Path

from defectops.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_data_prepare_prints_the_quarantine_report_path_from_the_cwd(tmp_path, monkeypatch, capsys):
    """`dvc repro` runs `defectops data prepare` from the repository root: the report's path is the
    dataset folder (paths.datasets / data.name), not the bare dataset name."""
    import pipelines.data

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text().replace("  name: synth ", "  name: leather ", 1))
    summary = {"name": "leather", "images": 3, "boxes": 2, "classes": ["cut"], "quarantined": 1,
               "clean_images": 1, "warnings": []}
    monkeypatch.setattr(pipelines.data, "prepare_flow", lambda params_file: summary)
    assert main(["--params", str(params), "data", "prepare"]) == 0
    out = capsys.readouterr().out
    assert "quarantine report: data/datasets/leather/quarantine.md" in out
    assert "data/datasets/leather: 3 images, 2 boxes, 1 classes (cut), 1 quarantined, 1 clean images" in out
