"""Views of a canonical dataset + split for the trainers (ultralytics ``data.yaml``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from .canonical import load_manifest

SPLITS = ("train", "val", "test")


def load_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path} (run `defectops data split`)")
    return json.loads(path.read_text())


def write_yolo_data_yaml(dataset_dir: str | Path, split: dict, out_dir: str | Path,
                         fold: int | None = None) -> Path:
    """Write ``out_dir/data.yaml`` and one image list per split with absolute paths.

    Ultralytics finds each label by swapping ``/images/`` for ``/labels/`` in the image path and
    writes a ``labels.cache`` beside the labels. So that it never writes into the (DVC-tracked)
    dataset, the view links every image into ``out_dir/images`` and copies the labels into
    ``out_dir/labels``. ``fold`` selects a k-fold train/val pair.
    """
    dataset_dir = Path(dataset_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(dataset_dir)
    images, labels = out_dir / "images", out_dir / "labels"
    for d in (images, labels):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
    image_of = {}
    for e in manifest["images"]:
        src = dataset_dir / e["image"]
        link = images / src.name
        link.symlink_to(src)
        shutil.copyfile(dataset_dir / e["label"], labels / f"{Path(e['label']).name}")
        image_of[e["name"]] = link
    for cache in out_dir.glob("*.cache"):
        cache.unlink()
    parts = {k: split[k] for k in SPLITS}
    if fold is not None:
        parts.update(split["kfold"][fold])
    data = {"path": str(out_dir), "names": dict(enumerate(manifest["classes"])),
            "nc": len(manifest["classes"])}
    for part, names in parts.items():
        missing = [n for n in names if n not in image_of]
        if missing:
            raise ValueError(f"split '{part}' names {len(missing)} image(s) missing from "
                             f"{dataset_dir} (e.g. {missing[0]}): re-run `defectops data split`")
        lst = out_dir / f"{part}.txt"
        lst.write_text("".join(f"{image_of[n]}\n" for n in names))
        data[part] = str(lst)
    path = out_dir / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
