"""The model card of a registered version: one Markdown file (Jinja2 template
``templates/model_card.md.j2``) and the images it cites, in one folder that the promotion logs
beside the version (MLflow run artifacts ``model_card/``).

What a quality engineer signs off: intended use and classes, the data (hash, split sizes, clean
images, source groups), the training settings the run used, detection metrics, the operating
point (per-class thresholds with their validation and test recall / precision), escape and
overkill rates with intervals, the verdict confusion, the worst test images (escapes and false
calls drawn over the truth), LAGNet's LAM grid, the deviations from the paper and how the gate
decided.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

CARD = "model_card.md"
CARD_INPUTS = "card_inputs.json"     # the CardInputs as JSON, beside the card
WORST = "worst_test_images.png"
TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class CardInputs:
    """Everything the card shows (plain values: the promotion collects them)."""

    detector: str                      # display name, e.g. DASC-YOLO-n
    registered_model: str
    version: str
    classes: list[str]
    data: dict                         # name, hash, source, splits: [{split, images, clean, boxes}], groups
    training: dict                     # the settings sections the training used (plain values)
    metrics: dict[str, dict]           # split -> ONNX metrics (mAP50, mAP50-95, precision, recall)
    op: dict                           # components.decision.operating_point_report (val and test)
    gate: dict                         # alias, reason, gate, margin, metric, chosen_score, champion_before, champion_score
    require: dict
    missed: list[str]
    candidates: list[str]
    deviations: str
    imgsz: int
    onnx_file: str
    run_id: str = ""
    commit: str = ""
    gain: dict | None = None
    confusion: Path | None = None      # ultralytics' confusion matrix PNG of the test scoring
    lam_grid: Path | None = None       # reports/lam/lam_grid.png for LAGNet
    worst: list[dict] = field(default_factory=list)   # worst_images() rows with drawn boxes


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _ci(v) -> str:
    return "" if not v else f"[{v[0]:.3f}, {v[1]:.3f}]"


RULE_TEXT = {"recall": "the highest confidence threshold whose validation box recall reaches the target",
             "precision": "the lowest confidence threshold whose validation box precision reaches the target",
             "f1": "the confidence threshold of maximal validation F1"}


def render(inputs: CardInputs, images: dict[str, str | None]) -> str:
    """The card's Markdown (``images``: the card-relative names of the cited pictures)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True,
                      autoescape=False)
    env.filters.update(num=_num, ci=_ci)
    training = yaml.safe_dump(inputs.training, sort_keys=False, default_flow_style=None, width=100)
    caption = "; ".join(f"{w['image']}: {w['why']}" for w in inputs.worst)
    return env.get_template("model_card.md.j2").render(
        **{k: getattr(inputs, k) for k in ("detector", "registered_model", "version", "classes", "data", "metrics",
                                           "op", "gate", "require", "missed", "candidates", "deviations", "imgsz",
                                           "onnx_file", "run_id", "commit", "gain")},
        training_yaml=training, rule_text=RULE_TEXT[inputs.op["rule"]],
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        confusion=images.get("confusion"), worst=images.get("worst"), lam_grid=images.get("lam_grid"),
        worst_rows=inputs.worst,
        worst_caption=f"Green: labelled boxes; red: detections that fired at the shipped thresholds. {caption}.")


def worst_images(verdicts: list[dict], limit: int = 8) -> list[dict]:
    """The test images to look at first (``components.decision.image_verdicts`` rows): escapes
    (most labelled boxes first), then overkills, then defective images with the most false calls."""
    escapes = sorted((v for v in verdicts if v["defective"] and v["verdict"] == "OK"), key=lambda v: -v["boxes"])
    overkill = sorted((v for v in verdicts if not v["defective"] and v["verdict"] == "NG"), key=lambda v: -v["fired"])
    false_calls = sorted((v for v in verdicts if v["defective"] and v["fired"] > v["matched"]),
                         key=lambda v: -(v["fired"] - v["matched"]))
    out = [{**v, "why": f"escape ({v['boxes']} defect box(es), nothing fired)"} for v in escapes]
    out += [{**v, "why": f"overkill (clean, {v['fired']} false call(s))"} for v in overkill]
    out += [{**v, "why": f"{v['fired'] - v['matched']} false call(s)"} for v in false_calls]
    return out[:limit]


def draw_worst(rows: list[dict], image_path: dict[str, Path], truth: dict[str, list], detect, out: Path) -> Path | None:
    """A grid of ``rows``' images with their labelled boxes (green) and the detections that fired
    (red, from ``detect(img_bgr)``: ``BoxModel.judge``-style dicts). ``truth``: image name ->
    ``[class name, x1, y1, x2, y2]`` rows in pixels."""
    if not rows:
        return None
    import cv2
    from matplotlib.figure import Figure
    from ultralytics.utils.plotting import Annotator

    cols = min(4, len(rows))
    nrows = (len(rows) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 3.5 * nrows))
    for k, r in enumerate(rows):
        img = cv2.imread(str(image_path[r["image"]]))
        fired = detect(img)["detections"]
        zoom = max(1.0, 480 / max(img.shape[:2]))        # small images drawn larger: readable labels
        big = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) if zoom > 1 else img.copy()
        ann = Annotator(big, line_width=1, font_size=9)
        for name, *box in truth.get(r["image"], []):
            ann.box_label([v * zoom for v in box], f"{name}", color=(40, 200, 40))
        for d in fired:
            ann.box_label([v * zoom for v in d["box_xyxy"]], f"{d['class']} {d['confidence']:.2f}",
                          color=(40, 40, 230))
        ax = fig.add_subplot(nrows, cols, k + 1)
        ax.imshow(np.ascontiguousarray(ann.result()[..., ::-1]))
        ax.set_title(f"{r['image']}\n{r['why']}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def write_model_card(folder: Path, inputs: CardInputs, worst_png: Path | None = None) -> Path:
    """Write ``folder/model_card.md`` with copies of the images it cites; returns the card's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, str | None] = {}
    for key, src in (("confusion", inputs.confusion), ("lam_grid", inputs.lam_grid), ("worst", worst_png)):
        if src is not None and Path(src).is_file():
            dst = folder / Path(src).name
            if Path(src).resolve() != dst.resolve():
                shutil.copyfile(src, dst)
            images[key] = dst.name
    card = folder / CARD
    card.write_text(render(inputs, images))
    return card


def card_data(manifest: dict, split: dict, name: str, content_hash: str, source: str) -> dict:
    """The card's data section: per split its images, clean images and boxes; the source groups."""
    by_name = {e["name"]: e for e in manifest["images"]}
    rows = [{"split": part, "images": len(split[part]),
             "clean": sum(not by_name[n]["boxes"] for n in split[part]),
             "boxes": sum(len(by_name[n]["boxes"]) for n in split[part])} for part in ("train", "val", "test")]
    groups = split.get("groups")
    return {"name": name, "hash": content_hash, "source": source, "splits": rows,
            "groups": groups.get("count") if isinstance(groups, dict) else None}


def truth_boxes(manifest: dict, classes: list[str]) -> dict[str, list]:
    """Image file name -> ``[class name, x1, y1, x2, y2]`` rows (the manifest's boxes, in pixels)."""
    return {Path(e["image"]).name: [[classes[int(b[0])], *map(float, b[1:5])] for b in e["boxes"]]
            for e in manifest["images"]}
