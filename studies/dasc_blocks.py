"""What the trained DASC-YOLO blocks do to their features (issue 10 item 5: why DASC-YOLO-n is level
with, not ahead of, the YOLO11n it extends).

Every inserted block (ResCBAM, SCConv, CSA, ProtoNet) maps a feature map to one of the same shape.
For each block of each kept DASC-YOLO-n run, on the NEU-DET validation images (never the test
split), this measures:

* ``rel_change``: ``||y - x|| / ||x||`` over all elements: how far the block moves its input;
* ``non_affine``: the share of the output's variance that a per-channel affine map of the input
  (``y_c ~ a_c x_c + b_c``, least squares over all pixels and images) does not explain. The next
  convolution and BatchNorm absorb any per-channel scale and shift, so a block with a share near 0
  is, to the network, a re-scaling: it adds parameters and FLOPs but no spatial or cross-channel
  selectivity. A share well above 0 means the block does input-dependent work.

For ProtoNet also its masks (eq. 4): the mean of ``M_fore`` and ``M_back`` and their spatial
standard deviation within an image (averaged over images): masks that do not vary over the image
cannot single out defect pixels; and ``fg_auc``, the ROC AUC of the foreground probability
``1 - M_back`` per grid cell against the ground-truth box mask at that grid (a cell is foreground
when its centre lies in a box; scikit-learn's ``roc_auc_score`` over all cells of all images): 0.5
is a mask that knows nothing of where the defects are, 1 one that separates them perfectly.

Also the learnt scalars the paper's equations carry (CSA ``alpha``, ``lambda_s``, ``lambda_g``;
ProtoNet ``alpha``, ``beta``, ``tau``; the gate where ``dasc.gate: zero``).

    python -m studies.dasc_blocks --run cpu-dasc-paper cpu-dasc-s1 cpu-dasc-s2   # -> results/dasc_blocks.{json,md}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from components.data.canonical import load_manifest
from components.deploy.export import letterbox_batch

from .common import cli, machine, write
from .neu_cpu import KEPT, NEU, dataset, protocol_params


class AffineStats:
    """Streaming per-channel sums of x, y, x^2, y^2, xy (float64) and of (y - x)^2, x^2."""

    def __init__(self):
        self.s = None
        self.diff2 = 0.0
        self.x2 = 0.0
        self.masks: dict[str, list[float]] = {}
        self.fg: list[tuple[np.ndarray, np.ndarray]] = []

    def add_fg(self, back: torch.Tensor, target: torch.Tensor) -> None:
        self.fg.append(((1 - back).flatten().numpy(), target.flatten().numpy()))

    def add_masks(self, fore: torch.Tensor, back: torch.Tensor) -> None:
        for name, m in (("fore", fore), ("back", back)):
            self.masks.setdefault(f"M_{name}_mean", []).extend(m.mean((1, 2, 3)).tolist())
            self.masks.setdefault(f"M_{name}_spatial_sd", []).extend(m.flatten(1).std(1).tolist())

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)     # (C, N)
        y = y.detach().double().transpose(0, 1).reshape(y.shape[1], -1)
        part = torch.stack([torch.full_like(x[:, 0], x.shape[1]), x.sum(1), y.sum(1), (x * x).sum(1),
                            (y * y).sum(1), (x * y).sum(1)])
        self.s = part if self.s is None else self.s + part
        self.diff2 += float(((y - x) ** 2).sum())
        self.x2 += float((x * x).sum())

    def result(self) -> dict[str, float]:
        n, sx, sy, sxx, syy, sxy = self.s
        vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        cov = sxy / n - sx * sy / n ** 2
        explained = torch.where(vx > 1e-12, cov ** 2 / vx.clamp_min(1e-12), torch.zeros_like(vx))
        resid = (vy - explained).clamp_min(0)
        return {"rel_change": round(float(np.sqrt(self.diff2 / max(self.x2, 1e-30))), 4),
                "non_affine": round(float(resid.sum() / vy.sum().clamp_min(1e-30)), 4),
                **{k: round(float(np.mean(v)), 4) for k, v in self.masks.items()}, **self.fg_result()}

    def fg_result(self) -> dict[str, float]:
        if not self.fg:
            return {}
        from sklearn.metrics import roc_auc_score

        score, target = (np.concatenate(v) for v in zip(*self.fg))
        return {"fg_auc": round(float(roc_auc_score(target, score)), 4), "fg_share": round(float(target.mean()), 4)}


def scalars(block: torch.nn.Module) -> dict[str, float]:
    out = {}
    for name in ("alpha", "beta", "lambda_s", "lambda_g", "gate"):
        v = getattr(block, name, None)
        if isinstance(v, torch.Tensor):
            out[name] = round(float(v.detach().reshape(-1)[0]), 4)
    if hasattr(block, "log_tau"):
        out["tau"] = round(float(block.log_tau.detach().exp()), 4)
    return out


def probe(weights: Path, images: torch.Tensor, boxes: tuple[torch.Tensor, torch.Tensor], batch: int = 16) -> list[dict]:
    """``boxes``: the ground-truth boxes (normalised xywh in the letterboxed frame) and the index
    of each box's image in ``images``."""
    import components.detectors.dasc.config  # noqa: F401  (registers the blocks with ultralytics' parser)
    from components.detectors.dasc.layers import Gated
    from components.models.loss import box_mask
    from ultralytics import YOLO

    model = YOLO(str(weights)).model.float().eval()
    stats, hooks = {}, []
    now = {}                                                          # the boxes of the batch in flight

    def hook(i: int, block: torch.nn.Module, inp: tuple, out: torch.Tensor) -> None:
        stats[i][1].add(inp[0], out)
        if hasattr(block, "masks"):                                   # ProtoNet
            fore, back = block.masks(inp[0])
            stats[i][1].add_masks(fore, back)
            stats[i][1].add_fg(back, box_mask(*now["boxes"], back.shape[0], *back.shape[2:]))

    for i, layer in enumerate(model.model):
        if isinstance(layer, Gated):
            stats[i] = (type(layer).__name__, AffineStats(), layer)
            hooks.append(layer.register_forward_hook(lambda m, inp, out, i=i: hook(i, m, inp, out)))
    with torch.inference_mode():
        for k in range(0, len(images), batch):
            inside = (boxes[1] >= k) & (boxes[1] < k + batch)
            now["boxes"] = (boxes[0][inside], boxes[1][inside] - k)
            model(images[k:k + batch])
    for h in hooks:
        h.remove()
    return [{"layer": i, "block": name, **st.result(), **scalars(layer)} for i, (name, st, layer) in stats.items()]


def letterboxed_boxes(entries: list[dict], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The manifest's pixel xyxy boxes as normalised xywh in ultralytics' square letterbox of
    ``size`` (scale ``r = min(size / h, size / w)``, centred padding), with each box's image index."""
    xywh, idx = [], []
    for i, e in enumerate(entries):
        r = min(size / e["height"], size / e["width"])
        pw, ph = (size - e["width"] * r) / 2, (size - e["height"] * r) / 2
        for _, x1, y1, x2, y2 in e["boxes"]:
            x1, x2 = (x1 * r + pw) / size, (x2 * r + pw) / size
            y1, y2 = (y1 * r + ph) / size, (y2 * r + ph) / size
            xywh.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
            idx.append(i)
    return torch.tensor(xywh, dtype=torch.float32).reshape(-1, 4), torch.tensor(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", nargs="+", required=True, help="kept DASC-YOLO runs (results/neu_cpu/weights/<run>.pt)")
    ap.add_argument("--images", type=int, default=180, help="validation images used (at most the split's)")
    ap.add_argument("--neu", type=Path, default=NEU)
    args = ap.parse_args()
    torch.manual_seed(0)
    params = protocol_params({})
    ds, split = dataset(params, args.neu)
    names = sorted(split["val"])[: args.images]
    entry = {e["name"]: e for e in load_manifest(ds)["images"]}
    size = int(params.train.imgsz)
    # the images as the served model takes them: ultralytics' square letterbox, RGB, 0-1
    images = torch.from_numpy(letterbox_batch([ds / entry[n]["image"] for n in names], size))
    boxes = letterboxed_boxes([entry[n] for n in names], size)
    rows, out = [], {"images": len(names), "split": "val", "runs": {}}
    for run in args.run:
        res = probe(KEPT / f"{run}.pt", images, boxes)
        out["runs"][run] = res
        for r in res:
            rows.append({"run": run, "layer": r["layer"], "block": r["block"], "||y-x||/||x||": r["rel_change"],
                         "non-affine share": r["non_affine"],
                         "M_fore mean (spatial sd)": (f"{r['M_fore_mean']:.3f} ({r['M_fore_spatial_sd']:.3f})"
                                                      if "M_fore_mean" in r else ""),
                         "M_back mean (spatial sd)": (f"{r['M_back_mean']:.3f} ({r['M_back_spatial_sd']:.3f})"
                                                      if "M_back_mean" in r else ""),
                         "1 - M_back vs boxes: AUC (box share)": (f"{r['fg_auc']:.3f} ({r['fg_share']:.2f})"
                                                                  if "fg_auc" in r else ""),
                         "learnt scalars": ", ".join(f"{k} {v:g}" for k, v in r.items()
                                                     if k in ("alpha", "beta", "lambda_s", "lambda_g", "tau", "gate"))})
    notes = ("Measured on the NEU-DET validation images (letterboxed to the served size). non-affine share: the part "
             "of a block's output variance a per-channel affine map of its input does not explain (0: the block only "
             "re-scales channels, which the next convolution absorbs). AUC: ROC AUC of the ProtoNet foreground probability "
             "1 - M_back per grid cell against the ground-truth box mask (0.5: no knowledge of where the defects are); "
             "box share: the fraction of cells inside a box.")
    write("dasc_blocks", {**out, "machine": machine(), "command": cli()}, rows,
          ["run", "layer", "block", "||y-x||/||x||", "non-affine share", "M_fore mean (spatial sd)",
           "M_back mean (spatial sd)", "1 - M_back vs boxes: AUC (box share)", "learnt scalars"],
          "DASC-YOLO-n on NEU-DET: what each trained block does to its features", notes)
    print(json.dumps({r: [(x["block"], x["rel_change"], x["non_affine"]) for x in v] for r, v in out["runs"].items()}))


if __name__ == "__main__":
    main()
