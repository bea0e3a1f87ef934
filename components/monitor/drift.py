"""Drift of the line against what the champion was made on, measured by Evidently.

One row per image, on both sides, with the same columns computed the same way:

* **inputs**: ``brightness``, ``contrast``, ``sharpness`` (:func:`predlog.image_stats`, the log's
  own definition), ``width``, ``height``, and ``emb_1..emb_k``: a fixed feature extractor on the
  image (:func:`embedding`: the energies of a wavelet decomposition by scale and orientation, a
  texture signature that needs no weights and means the same for every champion) reduced to
  ``k`` principal components fitted on the reference (scikit-learn's PCA);
* **outputs**: ``score_max`` (the highest score the answer holds, 0 with no box), ``boxes`` (how
  many), ``top_class`` (the class of the highest-scoring box, ``none``) and ``verdict``: the
  score distribution and the class mix.

The **reference** (:func:`reference_observations`) is the validation split of the champion's
dataset with the champion's own answers on it (its ONNX graph at its shipped thresholds, what
predict and the served model answer and log). The **window** (:func:`window_observations`) is a
slice of the prediction log; an image that was not kept has no embedding (its ``emb_*`` are
missing, which Evidently leaves out of those columns' tests).

:func:`compare` runs Evidently's ``DataDriftPreset`` (a ``Report`` with its tests: per column
the test Evidently picks for its type and size, K-S / chi-square / Z-test p-values below 0.05 on
small samples, Wasserstein / Jensen-Shannon distances on large ones; the share of drifted columns
against ``drift_share``), writes its HTML report and a JSON summary, and returns both in a
:class:`DriftResult`. No statistic is computed here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from .predlog import PredictionRecord, boxes_of, image_stats

INPUTS = ("brightness", "contrast", "sharpness", "width", "height")
OUTPUTS_NUM = ("score_max", "boxes")
OUTPUTS_CAT = ("top_class", "verdict")
NO_BOX = "none"
EMBED_SIZE, EMBED_LEVELS = 256, 5


def embedding(img: np.ndarray) -> np.ndarray:
    """The fixed feature vector of a BGR (or grey) image: the log energy (mean square) of each
    detail sub-band (horizontal, vertical, diagonal) of a 5-level Daubechies-2 wavelet transform
    (PyWavelets' ``wavedec2``) of the grey image resized to 256 x 256 in [0, 1]: a texture signature
    by scale and orientation (a blur empties the fine scales, another texture shifts them all)."""
    import pywt

    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    g = cv2.resize(gray, (EMBED_SIZE, EMBED_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    details = pywt.wavedec2(g, "db2", level=EMBED_LEVELS)[1:]
    return np.log(np.array([np.mean(np.square(b)) for level in details for b in level], np.float32) + 1e-10)


def row(stats: dict, width: int, height: int, boxes: Sequence[dict], verdict: str | None) -> dict:
    """The columns of one image from what the log holds of it (``boxes`` as the log writes them:
    ``cls``, ``name``, ``conf``, ``xyxy``)."""
    top = max(boxes, key=lambda b: b["conf"]) if boxes else None
    return {**{k: float(stats[k]) for k in INPUTS[:3]}, "width": float(width), "height": float(height),
            "score_max": float(top["conf"]) if top else 0.0, "boxes": float(len(boxes)),
            "top_class": str(top["name"]) if top else NO_BOX, "verdict": str(verdict or NO_BOX)}


@dataclass
class Observations:
    """One side of the comparison: ``rows`` (one dict per image, :func:`row`), ``keys`` (the
    prediction id of a window row, the image name of a reference row) and ``embeddings``
    (``(n, d)``, a row of NaN where the image is not at hand)."""

    rows: list[dict]
    keys: list
    embeddings: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)


def _stack(vectors: list[np.ndarray | None]) -> np.ndarray:
    d = next((len(v) for v in vectors if v is not None), 0)
    out = np.full((len(vectors), d), np.nan, np.float32)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i] = v
    return out


def window_observations(records: Iterable[PredictionRecord], image_file: Callable[[str], Path | None],
                        source: str = "prediction log") -> Observations:
    """The window's side: each record's logged statistics and answer; the embedding of its kept
    image (``image_file(sha256)``, e.g. ``PredictionLog.image_file``), None when it is not kept."""
    rows, keys, vecs = [], [], []
    for r in records:
        if not {"brightness", "contrast", "sharpness"} <= set(r.stats or {}):
            continue                          # a record without statistics says nothing about the inputs
        rows.append(row(r.stats, r.width, r.height, r.boxes, r.verdict))
        keys.append(r.id)
        path = image_file(r.image_sha256) if r.image_kept else None
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
        vecs.append(embedding(img) if img is not None else None)
    return Observations(rows, keys, _stack(vecs), source)


def reference_images(dataset_dir: Path, split: dict, size: int, part: str = "val") -> list[Path]:
    """At most ``size`` images of the split's ``part`` (evenly spaced over its sorted names)."""
    from components.data.canonical import load_manifest

    names = sorted(split.get(part) or [])
    if not names:
        raise ValueError(f"the split has no '{part}' images: no drift reference (run `defectops data split`)")
    image_of = {e["name"]: Path(dataset_dir) / e["image"] for e in load_manifest(Path(dataset_dir))["images"]}
    missing = [n for n in names if n not in image_of]
    if missing:
        raise ValueError(f"the split names {len(missing)} image(s) missing from {dataset_dir} (e.g. {missing[0]})")
    pick = np.unique(np.linspace(0, len(names) - 1, min(size, len(names))).round().astype(int))
    return [image_of[names[i]] for i in pick]


def reference_observations(model, images: Sequence[Path], source: str = "") -> Observations:
    """The reference side: each image's statistics (:func:`predlog.image_stats`, as the log computes
    them) and embedding, and ``model``'s answer on it (``model.judge(img)``: a
    ``components.deploy.serving.BoxModel``, the champion at its shipped thresholds)."""
    rows, keys, vecs = [], [], []
    for p in images:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot decode reference image {p}")
        answer = model.judge(img)
        rows.append(row(image_stats(img), img.shape[1], img.shape[0], boxes_of(answer["detections"]),
                        answer["verdict"]))
        keys.append(Path(p).stem)
        vecs.append(embedding(img))
    return Observations(rows, keys, _stack(vecs), source)


# ---- Evidently

def _evidently():
    """Evidently's entry points. Evidently 0.7.23 (the latest) imports
    ``pandas.core.dtypes.common.infer_dtype_from_object`` at import time, for a legacy column-type
    test this module never runs; pandas 3.1 removed that private helper. Where it is missing it is
    put back as pandas' public ``pandas_dtype(x).type`` (what it returned) so that the import works."""
    import pandas as pd
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):
        common.infer_dtype_from_object = lambda dtype: pd.api.types.pandas_dtype(dtype).type
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    return evidently, DataDefinition, Dataset, Report, DataDriftPreset


@dataclass
class DriftResult:
    """What :func:`compare` found: Evidently's share of drifted columns and its verdict against
    ``threshold`` (``drifted``), the drifted columns, and per column the test Evidently ran
    (``method``), its ``score`` (a p-value for the ``p_value`` methods, a distance otherwise),
    its ``threshold`` and whether it ``drifted``; the HTML report and JSON summary written; the
    two tables compared (pandas, ``emb_*`` included) for the review selection."""

    share: float
    threshold: float
    drifted: bool
    drifted_columns: list[str]
    columns: dict[str, dict]
    html: Path
    summary_file: Path
    current: object = field(repr=False, default=None)
    reference: object = field(repr=False, default=None)
    summary: dict = field(default_factory=dict)


def _frames(reference: Observations, current: Observations, components: int):
    """The two tables with the embedding's first ``components`` principal components (fitted on
    the reference) as ``emb_1..``; no ``emb_*`` when the window has no kept image."""
    import pandas as pd
    from sklearn.decomposition import PCA

    ref, cur = pd.DataFrame(reference.rows), pd.DataFrame(current.rows, index=current.keys)
    have = ~np.isnan(current.embeddings).any(axis=1) if current.embeddings.size else np.zeros(len(current), bool)
    k = min(components, len(reference) - 1, reference.embeddings.shape[1] if reference.embeddings.size else 0)
    if k < 1 or not have.any():
        return ref, cur, []
    pca = PCA(n_components=k, svd_solver="full").fit(reference.embeddings)
    names = [f"emb_{i + 1}" for i in range(k)]
    ref[names] = pca.transform(reference.embeddings)
    emb = np.full((len(current), k), np.nan)
    emb[have] = pca.transform(current.embeddings[have])
    cur[names] = emb
    return ref, cur, names


def compare(reference: Observations, current: Observations, drift_share: float, out_dir: Path,
            components: int = 3) -> DriftResult:
    """Evidently's ``DataDriftPreset`` of ``current`` against ``reference`` (``drift_share``: the
    share of drifted columns at which the dataset counts as drifted) -> ``out_dir/drift_report.html``
    and ``out_dir/drift_summary.json``; ValueError when a side is empty."""
    if len(reference) < 2 or len(current) < 1:
        raise ValueError(f"drift needs a reference and a window: {len(reference)} reference image(s), "
                         f"{len(current)} window image(s)")
    evidently, DataDefinition, Dataset, Report, DataDriftPreset = _evidently()
    ref, cur, emb = _frames(reference, current, components)
    numeric = [*INPUTS, *emb, *OUTPUTS_NUM]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=list(OUTPUTS_CAT))
    report = Report([DataDriftPreset(columns=numeric + list(OUTPUTS_CAT), drift_share=drift_share)],
                    include_tests=True)
    snap = report.run(Dataset.from_pandas(cur.reset_index(drop=True), data_definition=definition),
                      Dataset.from_pandas(ref, data_definition=definition))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, summary_file = out_dir / "drift_report.html", out_dir / "drift_summary.json"
    snap.save_html(str(html))
    share, columns, dataset_test = _read_snapshot(snap.dict())
    drifted_cols = [c for c, v in columns.items() if v["drifted"]]
    drifted = dataset_test if dataset_test is not None else share >= drift_share
    summary = {"evidently": evidently.__version__, "drift_share": share, "threshold": drift_share,
               "drifted": drifted, "drifted_columns": drifted_cols, "columns": columns,
               "reference": {"images": len(reference), "source": reference.source},
               "window": {"images": len(current), "source": current.source,
                          "with_embedding": int(cur[emb[0]].notna().sum()) if emb else 0}}
    summary_file.write_text(json.dumps(summary, indent=1))
    return DriftResult(share, drift_share, drifted, drifted_cols, columns, html, summary_file, cur, ref, summary)


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _read_snapshot(d: dict) -> tuple[float, dict[str, dict], bool | None]:
    """From Evidently's JSON export of the run: the share of drifted columns, per column the
    method / score / threshold / verdict of its ValueDrift test, the dataset-level test's verdict."""
    share, columns, dataset = 0.0, {}, None
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
        elif cfg["type"].endswith("ValueDrift"):
            columns[cfg["column"]] = {"method": cfg.get("method"), "score": _num(m["value"]),
                                      "threshold": cfg.get("threshold"), "drifted": False}
    for t in d.get("tests", []):
        params = (t.get("metric_config") or {}).get("params") or {}
        failed = str(getattr(t["status"], "value", t["status"])).upper() == "FAIL"
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in columns:
            columns[params["column"]]["drifted"] = failed
        elif params.get("type", "").endswith("DriftedColumnsCount"):
            dataset = failed
    return share, columns, dataset
