"""Ablation flows: ``defectops ablate dasc`` re-runs DASC-YOLO's Table 3 on the configured data,
``defectops ablate lagnet`` LAGNet's Tables 4 (LAM / SCEM on and off) and 5 (SCEM k x n).

Each row is trained on the train split (best epoch on val), evaluated on the test split with
the same evaluator as the pipeline, and logged as its own MLflow run (tags ``ablation=dasc``,
``row``, the module toggles). The table (mAP50, P, R, F1, params, GFLOPs, FPS, the paper's
values beside them) is rewritten after every row, so a long grid shows progress and a crash
keeps what finished: ``<paths.reports>/ablation/{dasc,lagnet}.{md,json}``. LAGNet rows read
the LAM stage's maps (``dvc repro lam`` first).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from prefect import flow, get_run_logger

from components.data.canonical import load_manifest
from components.data.views import load_split, write_yolo_data_yaml
from components.detectors.dasc.config import PAPER_TABLE3, TABLE3, write_dasc_yaml
from components.detectors.lagnet.config import VARIANTS, ablation_rows, lagnet_cfg, write_lagnet_yaml
from components.report import write_table
from components.settings import Evaluate, Settings
from components.train import TrainRequest

from .common import (dataset_hash, layout, log_outputs, model_data_yaml, numeric, read_params, served_lam, stage_run,
                     trainer_args)
from .tasks import evaluate_task, train_task

COLUMNS = ["row", "mAP50", "P", "R", "F1", "params (M)", "GFLOPs@640", "FPS", "paper mAP", "paper F1",
           "paper params (M)"]


def _slug(row: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", row.lower()).strip("-")


def select_rows(requested: list[str] | str, grid: dict = TABLE3) -> list[str]:
    """``all`` or a list of row names of ``grid`` (a paper's ablation table), checked."""
    rows = list(grid) if requested == "all" else list(requested)
    unknown = [r for r in rows if r not in grid]
    if unknown:
        raise ValueError(f"unknown ablation row(s) {unknown}; rows: {list(grid)}")
    return rows


@dataclass(frozen=True)
class Grid:
    """What the rows of a grid share: the dataset, its class count, the rows' work folder, the RGB
    data YAML, the training request's common part (at the grid's epochs), the evaluate settings
    and the report folder."""

    ds: Path
    nc: int
    work: Path
    data_yaml: Path
    train: TrainRequest
    ev: Evaluate
    out: Path

    @classmethod
    def of(cls, params: Settings, study: str, epochs: int | None) -> "Grid":
        """``epochs``: the grid's (default ``ablation.epochs``)."""
        lay = layout(params)
        ds, work = lay.dataset, lay.scratch(f"ablation-{study}")
        data_yaml = write_yolo_data_yaml(ds, load_split(lay.split_file), work / "data")
        train_args, device, seed = trainer_args(params)
        train_args["epochs"] = epochs or params.ablation.epochs
        return cls(ds, len(load_manifest(ds)["classes"]), work, data_yaml,
                   TrainRequest("", data_yaml, work, train_args, device, seed, params.loss.iou), params.evaluate,
                   lay.reports / "ablation" / study)

    def row(self, run, row_dir: Path, model_yaml: Path, data_yaml: Path, lam: dict | None = None) -> dict:
        """One row trained into ``row_dir`` (epochs logged to ``run``) and evaluated on the test
        split (``lam``: the LAM it is served with, see ``tasks.evaluate_task``)."""
        req = replace(self.train, model_cfg=str(model_yaml), data_yaml=data_yaml, out_dir=row_dir / "train",
                      lam=lam is not None)
        info = train_task(req, run)
        return evaluate_task(info["best"], str(data_yaml), self.ev, req.train_args["imgsz"], str(row_dir / "eval"),
                             str(row_dir / "eval-plots"), lam)


@flow(name="ablate-dasc")
def ablate_dasc_flow(rows: list[str] | None = None, epochs: int | None = None,
                     params_file: str = "params.yaml") -> dict:
    params = read_params(params_file)
    log = get_run_logger()
    rows = select_rows(rows or params.ablation.rows)
    g = Grid.of(params, "dasc", epochs)
    epochs, scale, t = g.train.train_args["epochs"], params.dasc.scale, g.train
    table, results = [], {}
    for i, row in enumerate(rows, 1):
        log.info("ablation row %d/%d: %s", i, len(rows), row)
        toggles = TABLE3[row]
        row_dir = g.work / _slug(row)
        model_yaml = write_dasc_yaml(row_dir, scale, g.nc, toggles)
        with stage_run(f"ablate:dasc:{row}", params, ["train", "loss", "ablation"], dataset_hash(g.ds),
                       {"ablation": "dasc", "row": row, **{f"dasc.{k}": v for k, v in asdict(toggles).items()},
                        "dasc.scale": scale}, dataset="train") as run:
            m = g.row(run, row_dir, model_yaml, g.data_yaml)
            log_outputs(run, metrics=numeric(m, "test."))
        paper = PAPER_TABLE3[row]
        results[row] = {"toggles": asdict(toggles), "metrics": m, "mlflow_run_id": run.run_id,
                        "paper": dict(zip(["mAP", "P", "R", "F1", "params_M", "FPS"], paper))}
        table.append({"row": row, **_figures(m), "paper mAP": paper[0], "paper F1": paper[3],
                      "paper params (M)": paper[4]})
        preamble = (f"Dataset `{g.ds.name}` ({dataset_hash(g.ds)}), YOLO11{scale}, {epochs} epochs, imgsz "
                    f"{t.train_args['imgsz']}, box loss {t.iou_loss}, device {t.device}; metrics on the test split; "
                    f"FPS: eager PyTorch, batch {g.ev.latency.batch}. Paper: leather dataset, its own "
                    f"protocol (Table 3). {i}/{len(rows)} rows done.")
        md, _ = write_table(g.out, "DASC-YOLO ablation (Table 3)", preamble, table, COLUMNS,
                            {"rows": results, "epochs": epochs, "dataset": g.ds.name, "scale": scale})
    return {"table": str(md), "rows": results}


def _figures(m: dict) -> dict:
    """A row's figures as the tables print them (percentages, millions of parameters)."""
    return {"mAP50": round(100 * m["mAP50"], 1), "P": round(100 * m["precision"], 1),
            "R": round(100 * m["recall"], 1), "F1": round(100 * m["F1"], 1),
            "params (M)": round(m["params"] / 1e6, 3), "GFLOPs@640": m["GFLOPs"], "FPS": m["fps"]}


LAGNET_COLUMNS = ["row", "LAM", "SCEM", "k", "n", "mAP50", "P", "R", "F1", "params (M)", "GFLOPs@640", "FPS",
                  "paper mAP (NEU-DET)"]


@flow(name="ablate-lagnet")
def ablate_lagnet_flow(rows: list[str] | None = None, epochs: int | None = None,
                       params_file: str = "params.yaml") -> dict:
    params = read_params(params_file)
    log = get_run_logger()
    lg = params.lagnet
    grid = ablation_rows(lg.k, lg.n)
    rows = select_rows(rows or params.ablation.lagnet_rows, grid)
    g = Grid.of(params, "lagnet", epochs)
    lam_yaml = (model_data_yaml("lagnet", params.override({"lagnet.lam": True}, "ablation: LAM rows"), g.data_yaml)
                if any(grid[r][0].lam for r in rows) else None)
    table, results = [], {}
    for i, row in enumerate(rows, 1):
        log.info("LAGNet ablation row %d/%d: %s", i, len(rows), row)
        toggles, k, n, paper = grid[row]
        row_dir = g.work / _slug(row)
        model_yaml = write_lagnet_yaml(row_dir, lagnet_cfg(lg.variant, lg.width, k, n, g.nc, toggles))
        tags = {"ablation": "lagnet", "row": row, "lagnet.lam": toggles.lam, "lagnet.scem": toggles.scem,
                "lagnet.k": k, "lagnet.n": n, "lagnet.variant": lg.variant}
        with stage_run(f"ablate:lagnet:{row}", params, ["train", "loss", "ablation", "lagnet", "lam"],
                       dataset_hash(g.ds), tags, dataset="train") as run:
            m = g.row(run, row_dir, model_yaml, lam_yaml if toggles.lam else g.data_yaml,
                      served_lam(params) if toggles.lam else None)
            log_outputs(run, metrics=numeric(m, "test."))
        results[row] = {"lam": toggles.lam, "scem": toggles.scem, "k": k, "n": n, "metrics": m,
                        "mlflow_run_id": run.run_id, "paper_mAP": paper}
        table.append({"row": row, "LAM": toggles.lam, "SCEM": toggles.scem, "k": k if toggles.scem else "",
                      "n": n if toggles.scem else "", **_figures(m),
                      "paper mAP (NEU-DET)": "" if paper is None else paper})
        md, _ = write_table(g.out, "LAGNet ablation (Tables 4 and 5)", _lagnet_preamble(params, g, i, len(rows)),
                            table, LAGNET_COLUMNS, {"rows": results, "epochs": g.train.train_args["epochs"],
                                                    "dataset": g.ds.name, "lagnet": lg.plain()})
    return {"table": str(md), "rows": results}


def _lagnet_preamble(params: Settings, g: Grid, done: int, rows: int) -> str:
    lg, t = params.lagnet, g.train
    return (f"Dataset `{g.ds.name}` ({dataset_hash(g.ds)}), {VARIANTS[lg.variant]} (MobileNetV3-"
            f"{lg.variant}, width {lg.width}), {t.train_args['epochs']} epochs, imgsz {t.train_args['imgsz']}, box "
            f"loss {t.iou_loss}, LAM mode {params.lam.mode}, device {t.device}; metrics on the test "
            f"split; FPS: eager PyTorch of the detector alone, batch {g.ev.latency.batch}. Paper: "
            "NEU-DET, 640 px, 500 epochs, MobileNetV3-Large rows of Table 4 and Table 5 "
            f"(its YOLOv5 anchor head; ours is ultralytics' anchor-free head). {done}/{rows} rows done.")
