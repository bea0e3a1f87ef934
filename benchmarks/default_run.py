"""The default run, recorded: ``dvc repro`` of the embedded synthetic data (what ``make run`` runs
after its set-up), timed, and what it produced read back from its outputs: each detector's
validation and test mAP50, the gains over the baseline with their 95 % intervals, the tuning
decisions and the promotion (chosen on validation, test reported).

    python -m benchmarks.default_run [--force] [--no-repro]

Writes ``benchmarks/results/default_run/run.{json,md}``. ``--force``: ``dvc repro --force`` (every
stage re-runs: the whole chain's time); ``--no-repro``: only read back the outputs already there
(no timing). The load average before and after is recorded, so a timing taken while something
else ran on the machine is marked as such rather than passed off as the chain's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

from .common import cli, machine, timed, write

MODELS = ("baseline", "dasc", "lagnet")


def outputs(root: Path = Path(".")) -> dict:
    """What the run left: metrics, tuning decisions, the promotion record."""
    from components.layout import Layout
    from components.settings import load_settings

    lay = Layout.from_params(load_settings(root / "params.yaml"))
    out: dict = {"models": {}, "tuned": {}}
    for m in MODELS:
        f = lay.metrics_file(m)
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        out["models"][m] = {"test_mAP50": d["mAP50"], "val_mAP50": (d.get("val") or {}).get("mAP50"),
                            "test_images": d.get("images"), "params": d.get("params"),
                            "gain_vs_baseline": d.get("gain_vs_baseline"),
                            "operating_point": d.get("operating_point")}
        tuned = lay.models / "tuned" / f"{m}.json"
        if tuned.is_file():
            out["tuned"][m] = json.loads(tuned.read_text())["decision"]
    if lay.promotion.is_file():
        p = json.loads(lay.promotion.read_text())
        out["promoted"] = {k: p.get(k) for k in ("model", "version", "alias", "reason", "chosen_on")}
        out["promoted"]["onnx_val"] = p.get("candidate") if p.get("chosen_on") == "val" else None
        out["promoted"]["onnx_test"] = p.get("candidate_test", p.get("candidate"))
        out["promoted"]["operating_point"] = p.get("operating_point")
        out["promoted"]["requirements_missed"] = p.get("requirements_missed")
    return out


def rates(op: dict | None) -> dict:
    """Test escape and overkill rates with their intervals, at a validation operating point."""
    out = {}
    for k in ("escape", "overkill"):
        t = (op or {}).get("test") or {}
        v, ci, ex = t.get(f"{k}_rate"), t.get(f"{k}_ci95"), t.get(f"{k}_exact95")
        out[f"test {k} rate [95 % CI]"] = "" if v is None else (
            f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            + (f", exact [{ex[0]:.3f}, {ex[1]:.3f}]" if ex else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="dvc repro --force: every stage re-runs")
    ap.add_argument("--no-repro", action="store_true", help="read the outputs back only")
    a = ap.parse_args()
    payload: dict = {"machine": machine(), "command": cli()}
    if not a.no_repro:
        log = Path(tempfile.mkdtemp(prefix="bench-default-run-")) / "dvc-repro.log"
        load_before = os.getloadavg()
        r = timed(["dvc", "repro", *(["--force"] if a.force else [])], log)
        text = log.read_text()
        payload.update(repro=r, log=str(log), load_before=[round(x, 2) for x in load_before],
                       load_after=[round(x, 2) for x in os.getloadavg()],
                       stages_run=re.findall(r"Running stage '([^']+)'", text))
        if r["rc"] != 0:
            raise SystemExit(f"dvc repro failed (exit {r['rc']}): see {log}")
    payload.update(outputs())
    rows = [{"detector": m, "val mAP50": v["val_mAP50"], "test mAP50": v["test_mAP50"],
             "test gain vs baseline [95 % CI]": "" if not v["gain_vs_baseline"] else
             "{:+.3f} [{:+.3f}, {:+.3f}]".format(v["gain_vs_baseline"]["mAP50"], *v["gain_vs_baseline"]["ci95"]),
             **rates(v.get("operating_point")), "tuning": payload["tuned"].get(m, "")}
            for m, v in payload["models"].items()]
    notes = []
    if "repro" in payload:
        notes.append(f"`{payload['repro']['command']}`: {payload['repro']['seconds'] / 60:.1f} min, "
                     f"{len(payload['stages_run'])} stages run; load average (1 min) {payload['load_before'][0]} "
                     f"before, {payload['load_after'][0]} after ({payload['machine']['cpu_count']} cores).")
    p = payload.get("promoted")
    if p:
        val = f"val mAP50 {p['onnx_val']['mAP50']:.3f}, " if p.get("onnx_val") else ""
        notes.append(f"Promoted: {p['model']} as v{p['version']} `{p['alias']}` ({p['reason']}), through ONNX "
                     f"Runtime {val}test mAP50 {p['onnx_test']['mAP50']:.3f}; chosen on {p.get('chosen_on') or 'test'}.")
    if p and p.get("operating_point"):
        r = rates(p["operating_point"])
        notes.append(f"At the shipped thresholds (chosen on the ONNX validation scoring: "
                     + ", ".join(f"{c} {t:.3f}" for c, t in p["operating_point"]["thresholds"].items())
                     + f"): test escape rate {r['test escape rate [95 % CI]']}, overkill rate "
                     f"{r['test overkill rate [95 % CI]']}; requirements missed: {p.get('requirements_missed') or 'none'}.")
    print(write("default_run/run", payload, rows,
                ["detector", "val mAP50", "test mAP50", "test gain vs baseline [95 % CI]",
                 "test escape rate [95 % CI]", "test overkill rate [95 % CI]", "tuning"],
                "The default run (embedded synthetic data)", "\n\n".join(notes)))


if __name__ == "__main__":
    main()
