"""``defectops report``: the detectors' results in a table of at most 100 columns, showing the
metrics files' values, and the same as Markdown in <paths.reports>/summary.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from defectops.cli import main

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["grain_side_longitudinal_scratch_from_the_tannery_drum_during_retanning_and_fatliquoring", "growth_mark", "hole",
           "rotten_grain_with_loose_fibres_after_liming_and_splitting", "fold", "stain", "pinhole",
           "healed_insect_bite_scar_on_the_shoulder_region"]


def _metrics(model: str, test: float, val: float, fps: float, gain=None, op=None) -> dict:
    m = {"split": "test", "mAP50": test, "val": {"split": "val", "mAP50": val}, "fps": fps,
         "latency_batch": 1, "latency_device": "cpu (AMD EPYC)", "model": model,
         "per_class_AP50": {c: round(0.1 + 0.1 * i, 4) for i, c in enumerate(CLASSES)}}
    if gain:
        m["gain_vs_baseline"] = {"mAP50": gain[0], "ci95": gain[1]}
    if op:
        m["operating_point"] = {"test": op}
    return m


def _project(tmp_path: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"].update(metrics=str(tmp_path / "metrics"), reports=str(tmp_path / "reports"))
    (tmp_path / "metrics").mkdir()
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def test_report_fits_100_columns_and_shows_the_files_values(tmp_path, capsys):
    params = _project(tmp_path)
    files = {
        "baseline": _metrics("baseline", 0.6593, 0.6551, 99.94),
        "dasc": _metrics("dasc", 0.6781, 0.6729, 73.43, (0.0188, [-0.0174, 0.0503]),
                         {"escape_rate": 0.0417, "escape_ci95": [0.0208, 0.0792],
                          "overkill_rate": 0.1, "overkill_ci95": [0.05, 0.18]}),
        "lagnet": _metrics("lagnet", 0.678, 0.65, 1234.56, (-0.0019, [-0.0181, 0.0507]),
                           {"escape_rate": 0.0, "escape_ci95": [0.0, 0.0], "overkill_rate": None,
                            "overkill_ci95": None}),
    }
    for m, d in files.items():
        (tmp_path / "metrics" / f"{m}.json").write_text(json.dumps(d))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "promotion.json").write_text(json.dumps({
        "model": "dasc", "version": "3", "alias": "challenger", "metric": "mAP50", "chosen_on": "val",
        "reason": "did not beat the champion (version 2, lagnet) by the margin 0.005 on the same "
                  "validation images through the same ONNX evaluator: 0.6701 vs 0.6690",
        "candidate_test": {"mAP50": 0.6689}}))

    assert main(["--params", str(params), "report"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["dasc"], ["lagnet"],
                                                                                               ["baseline"])}
    assert rows["baseline"] == ["baseline", "0.655", "0.659", "-", "99.9", "-", "-"]
    assert rows["dasc"] == ["dasc", "0.673", "0.678", "+0.019", "[-0.017,", "+0.050]", "73.4",
                            "0.042", "[0.021,", "0.079]", "0.100", "[0.050,", "0.180]"]
    assert rows["lagnet"] == ["lagnet", "0.650", "0.678", "-0.002", "[-0.018,", "+0.051]", "1234.6",
                              "0.000", "[0.000,", "0.000]", "-"]
    assert "hole" in out and "healed_insect_bite_scar_on_the" in out     # long names wrap, never widen
    assert "promotion: dasc chosen on val mAP50 -> version 3, alias 'challenger' (did not beat" in out
    assert "0.6690); test mAP50 through the registered ONNX model 0.669" in " ".join(out.split())

    md = (tmp_path / "reports" / "summary.md").read_text()
    cells = {r[0]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
                               if line.startswith("| dasc") or line.startswith("| growth_mark"))}
    assert cells["dasc"] == ["dasc", "0.673", "0.678", "+0.019 [-0.017, +0.050]", "73.4", "0.042 [0.021, 0.079]",
                             "0.100 [0.050, 0.180]"]
    assert cells["growth_mark"] == ["growth_mark", "0.200", "0.200", "0.200"]
    assert re.search(r"^- promotion: dasc chosen on val mAP50 -> version 3", md, re.M)


def test_report_without_results_is_one_error_line(tmp_path, capsys):
    assert main(["--params", str(_project(tmp_path)), "report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no evaluation results in") and err.count("\n") == 1
