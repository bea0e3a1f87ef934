"""Import Pascal VOC (NEU-DET and GC10-DET layouts) and YOLO txt (Roboflow/ultralytics export)
into the canonical dataset, validating every sample and quarantining bad ones with a reason.

What is quarantined (the whole sample, so no defect is silently left unlabelled):

* unreadable, truncated or non-image files;
* annotations without an image, images without an annotation (an *empty* YOLO label file or a
  VOC XML with no ``<object>`` is a deliberate background image and is kept);
* malformed annotations (bad XML, bad YOLO lines);
* boxes with zero or negative area, or outside the image by more than ``clip_px`` pixels
  (smaller overshoot is clipped to the image);
* unknown class names / ids;
* duplicate samples: the same decoded pixels *and* the same boxes as an earlier sample (in
  sorted source order). The same pixels with a *different* annotation (NEU-DET has one such
  pair: patches_101/patches_105) are kept, listed as a warning, and grouped by the splitter so
  identical images never straddle splits (as are Roboflow copies and perceptual near-duplicates);
* symlinks (files or folders): reason ``symlink``, the target never opened; with
  ``follow_symlinks="inside"`` a link that resolves inside the source is read like a file.

The source folder is only read, never written, and nothing outside it is read. Any file name
works: undecodable bytes are shown as ``\\xNN`` in the reports (``canonical.printable``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml
from tqdm import tqdm

from ..errors import StopError
from .canonical import (NEAR_DUP_BITS, Box, Contents, Rejection, Sample, decode_image, printable, sha256_bytes,
                        write_dataset)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
GC10_CLASSES = ["1_chongkong", "2_hanfeng", "3_yueyawan", "4_shuiban", "5_youban", "6_siban",
                "7_yiwu", "8_yahen", "9_zhehen", "10_yaozhed"]
FORMATS = ("auto", "voc", "yolo")                 # data.format: "auto" or a key of READERS
FOLLOW = ("never", "inside")                       # data.follow_symlinks


class ImportError_(StopError, ValueError):
    """The source cannot be imported at all (wrong path, unknown layout, nothing usable)."""


@dataclass
class RawItem:
    """An image path with the objects its annotation declares, before validation."""

    image: Path
    source: str                                    # path relative to the source root
    objects: list[tuple[str | int, float, float, float, float]]  # (class, x1, y1, x2, y2) px
    problem: str | None = None                     # annotation-level problem found by the reader
    label_file: Path | None = None                 # YOLO: normalised labels, parsed once size is known


@dataclass
class ReadResult:
    class_names: list[str] | None                  # None: discover from the annotations
    items: list[RawItem]
    rejections: list[Rejection]
    layout: str


# --------------------------------------------------------------------------- helpers

def _rel(path: Path, root: Path) -> str:
    return printable(path.relative_to(root).as_posix())


def _link(path: Path, root: Path, follow: str) -> str | None:
    """Why ``path`` (under the resolved ``root``) must not be read: a symlink on its way from
    ``root``, unless ``follow`` is "inside" and it resolves inside ``root``; None when it may be
    read. Only the links are read (``realpath``), never what they point to."""
    real = Path(os.path.realpath(path))
    if real == path:
        return None
    if follow == "inside":
        return None if real.is_relative_to(root) else "symlink to outside the source"
    return "symlink"


def _files(top: Path, root: Path, follow: str, rejections: list[Rejection],
           links: list[Path] | None = None) -> list[Path]:
    """Regular files under ``top`` (sorted); a symlinked file or folder that may not be followed
    (``_link``) is quarantined instead (and added to ``links``), and nothing under it is listed."""
    why = _link(top, root, follow)
    if why:
        rejections.append(Rejection(_rel(top, root), why))
        return []
    out, seen = [], set()
    for folder, dirs, names in os.walk(top, followlinks=follow == "inside"):
        if os.path.realpath(folder) in seen:      # a link back up the tree: walked once
            dirs.clear()
            continue
        seen.add(os.path.realpath(folder))
        for n in sorted(dirs + names):
            p = Path(folder, n)
            why = _link(p, root, follow)
            if why:
                rejections.append(Rejection(_rel(p, root), why))
                if links is not None:
                    links.append(p)
                if n in dirs:
                    dirs.remove(n)
            elif n in names and p.is_file():
                out.append(p)
    return sorted(out)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def _find_dir(root: Path, *names: str) -> Path | None:
    wanted = {n.lower() for n in names}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    return None


def check_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int,
              clip_px: float) -> tuple[float, float, float, float]:
    """Return the box clipped to the image, or raise ValueError saying why it is rejected."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError("non-finite coordinate")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"zero or negative area ({x1:g},{y1:g},{x2:g},{y2:g})")
    if x1 < -clip_px or y1 < -clip_px or x2 > width + clip_px or y2 > height + clip_px:
        raise ValueError(f"outside the {width}x{height} image by more than {clip_px:g} px "
                         f"({x1:g},{y1:g},{x2:g},{y2:g})")
    x1, y1 = max(0.0, x1), max(0.0, y1)
    x2, y2 = min(float(width), x2), min(float(height), y2)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"zero area after clipping ({x1:g},{y1:g},{x2:g},{y2:g})")
    return x1, y1, x2, y2


# --------------------------------------------------------------------------- VOC

def _parse_voc(xml_path: Path) -> tuple[str | None, list[tuple[str, float, float, float, float]]]:
    """Return (<filename> text, objects). VOC pixel indices are 1-based and inclusive:
    ``[xmin, xmax]`` becomes the half-open pixel range ``[xmin - 1, xmax)``."""
    root = ET.parse(xml_path).getroot()
    filename = (root.findtext("filename") or "").strip() or None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"object '{name}' has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"object '{name}' has a missing or non-numeric coordinate") from e
        objects.append((name, xmin - 1, ymin - 1, xmax, ymax))
    return filename, objects


def _voc_items(root: Path, xml_paths: list[Path], images: list[Path], rejections: list[Rejection]
               ) -> list[RawItem]:
    linked = {Path(r.source).stem for r in rejections if r.reason.startswith("symlink")}
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        by_stem.setdefault(p.stem, []).append(p)
    used: set[Path] = set()
    items = []
    for xp in tqdm(xml_paths, desc="read VOC", unit="xml", leave=False):
        try:
            filename, objects = _parse_voc(xp)
            problem = None
        except (ET.ParseError, ValueError) as e:
            filename, objects, problem = None, [], f"malformed annotation: {e}"
        # match by the XML's own stem first, then by <filename> (NEU: may lack the extension)
        candidates = by_stem.get(xp.stem) or (by_stem.get(Path(filename).stem) if filename else None)
        if not candidates:
            rejections.append(Rejection(_rel(xp, root), "annotation without image"
                                        + (" (its image is a symlink)" if xp.stem in linked else "")))
            continue
        img = candidates[0]
        if len(candidates) > 1 and filename:
            img = next((c for c in candidates if c.name == filename), img)
        used.add(img)
        items.append(RawItem(img, _rel(img, root), list(objects), problem))
    for p in images:
        if p not in used:
            rejections.append(Rejection(_rel(p, root), "image without annotation"
                                        + (" (its annotation is a symlink)" if p.stem in linked else "")))
    return items


def _split_files(files: Iterable[Path], root: Path, rejections: list[Rejection]) -> list[Path]:
    images = []
    for p in files:
        if _is_image(p):
            images.append(p)
        elif p.name.startswith("."):
            continue
        else:
            rejections.append(Rejection(_rel(p, root), "not an image file"))
    return images


def read_voc(root: Path, follow: str = "never") -> ReadResult:
    rejections: list[Rejection] = []
    lable = _find_dir(root, "lable", "label")
    numbered = [d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"\d+", d.name)]
    if lable is not None and numbered:
        # GC10-DET: images in class-numbered folders 1..10, XMLs in lable/
        files = sorted(f for d in numbered for f in _files(d, root, follow, rejections))
        images = _split_files(files, root, rejections)
        xmls = [p for p in _files(lable, root, follow, rejections) if p.suffix.lower() == ".xml"]
        return ReadResult(list(GC10_CLASSES), _voc_items(root, xmls, images, rejections),
                          rejections, "voc-gc10")
    ann = _find_dir(root, "annotations", "annotation", "xml", "xmls")
    img_dir = _find_dir(root, "images", "jpegimages", "imgs", "img")
    if ann is None or img_dir is None:
        raise ImportError_(f"{root}: not a VOC layout (need IMAGES/ + ANNOTATIONS/ as NEU-DET, "
                           "or class-numbered image folders + lable/ as GC10-DET)")
    xmls = _files(ann, root, follow, rejections)
    for p in xmls:
        if p.suffix.lower() != ".xml" and not p.name.startswith("."):
            rejections.append(Rejection(_rel(p, root), "not an XML annotation"))
    xmls = [p for p in xmls if p.suffix.lower() == ".xml"]
    images = _split_files(_files(img_dir, root, follow, rejections), root, rejections)
    return ReadResult(None, _voc_items(root, xmls, images, rejections), rejections, "voc")


# --------------------------------------------------------------------------- YOLO

def _yolo_names(root: Path, follow: str) -> list[str]:
    for cand in sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml")):
        if _link(cand, root, follow):
            raise ImportError_(f"{cand}: a symlink, not read (data.follow_symlinks: {follow})")
        try:
            data = yaml.safe_load(cand.read_text())
        except yaml.YAMLError as e:
            raise ImportError_(f"{cand}: not valid YAML: {e}") from e
        if isinstance(data, dict) and "names" in data:
            names = data["names"]
            if isinstance(names, dict):
                keys = sorted(int(k) for k in names)
                if keys != list(range(len(keys))):
                    raise ImportError_(f"{cand}: class ids must be 0..n-1, got {keys}")
                return [str(names[k]) for k in keys]
            return [str(n) for n in names]
    raise ImportError_(f"{root}: YOLO layout needs a data.yaml with 'names'")


def _parse_yolo_label(path: Path, width: int, height: int) -> list[tuple[int, float, float, float, float]]:
    """Parse ``class cx cy w h`` lines (polygon lines ``class x1 y1 x2 y2 ...`` become their
    bounding box); return pixel boxes or raise ValueError naming the bad line."""
    objects = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls_f = float(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError as e:
            raise ValueError(f"line {n}: non-numeric value") from e
        if cls_f != int(cls_f):
            raise ValueError(f"line {n}: class id {parts[0]} is not an integer")
        if len(vals) == 4:
            cx, cy, w, h = vals
            x1, x2 = (cx - w / 2) * width, (cx + w / 2) * width
            y1, y2 = (cy - h / 2) * height, (cy + h / 2) * height
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            xs, ys = vals[0::2], vals[1::2]
            x1, x2, y1, y2 = min(xs) * width, max(xs) * width, min(ys) * height, max(ys) * height
        else:
            raise ValueError(f"line {n}: expected 'class cx cy w h' or a polygon, got {len(parts)} fields")
        objects.append((int(cls_f), x1, y1, x2, y2))
    return objects


def read_yolo(root: Path, follow: str = "never") -> ReadResult:
    names = _yolo_names(root, follow)
    rejections: list[Rejection] = []
    image_dirs = sorted(d for d in root.rglob("images") if d.is_dir())
    if not image_dirs:
        raise ImportError_(f"{root}: YOLO layout needs images/ folders (train/images, valid/images ...)")
    items = []
    for d in image_dirs:
        labels = d.parent / "labels"
        links: list[Path] = []
        images = _split_files(_files(d, root, follow, rejections, links), root, rejections)
        seen = {labels / p.relative_to(d).with_suffix(".txt") for p in links}   # reported as symlinks
        for img in images:
            lab = labels / img.relative_to(d).with_suffix(".txt")
            seen.add(lab)
            why = _link(lab, root, follow)
            if why:
                rejections.append(Rejection(_rel(img, root), f"{why}: its annotation {_rel(lab, root)}"))
                continue
            if not lab.is_file():
                rejections.append(Rejection(_rel(img, root), "image without annotation"))
                continue
            items.append(RawItem(img, _rel(img, root), [], label_file=lab))
        if labels.is_dir():        # linked labels were reported with their images above
            for lab in (p for p in _files(labels, root, follow, []) if p.suffix == ".txt"):
                if lab not in seen:
                    rejections.append(Rejection(_rel(lab, root), "annotation without image"))
    return ReadResult(names, items, rejections, "yolo")


# a format's reader (root, follow) -> ReadResult; a new format: its reader here and its name in FORMATS
READERS = {"voc": read_voc, "yolo": read_yolo}
assert set(FORMATS) == {"auto", *READERS}, "FORMATS and READERS disagree"


def read_source(src: Path, fmt: str, follow: str = "never") -> ReadResult:
    """``src`` read by the reader of ``fmt`` (``auto``: :func:`detect_format`)."""
    return READERS[detect_format(src) if fmt == "auto" else fmt](src, follow)


# --------------------------------------------------------------------------- validation

def detect_format(src: Path) -> str:
    if any(src.glob("*.yaml")) or any(src.glob("*.yml")):
        if any(d.is_dir() for d in src.rglob("labels")):
            return "yolo"
    if any(src.rglob("*.xml")):
        return "voc"
    raise ImportError_(f"{src}: cannot tell the format (no data.yaml + labels/, no VOC XML); "
                       "pass --format voc|yolo")


def _validate(read: ReadResult, clip_px: float, classes: list[str] | None
              ) -> tuple[list[str], list[Sample], list[Rejection], list[str]]:
    rejections = list(read.rejections)
    # class list: explicit > layout's own > discovered (sorted) from the annotations
    names = list(classes) if classes else read.class_names
    if names is None:
        found = {o[0] for it in read.items for o in it.objects}
        names = sorted(str(n) for n in found if n)
    index = {n: i for i, n in enumerate(names)}

    samples: list[Sample] = []
    taken_names: set[str] = set()
    seen_pixels: dict[str, list[tuple[str, tuple]]] = {}
    warnings: list[str] = []
    for it in tqdm(sorted(read.items, key=lambda i: i.source), desc="validate", unit="img"):
        def reject(reason: str) -> None:
            rejections.append(Rejection(it.source, reason))

        if it.problem:
            reject(it.problem)
            continue
        try:
            data = it.image.read_bytes()
            width, height, pix = decode_image(data)
        except (OSError, ValueError) as e:
            reject(str(e))
            continue
        objects = it.objects
        if it.label_file is not None:
            try:
                objects = _parse_yolo_label(it.label_file, width, height)
            except (OSError, ValueError) as e:
                reject(f"malformed annotation: {e}")
                continue
        boxes, bad = [], None
        for k, (cls, x1, y1, x2, y2) in enumerate(objects):
            if isinstance(cls, int):
                if not 0 <= cls < len(names):
                    bad = f"box {k}: unknown class id {cls} (dataset has {len(names)} classes)"
                    break
                cid = cls
            else:
                if cls not in index:
                    bad = f"box {k}: unknown class name '{cls}'"
                    break
                cid = index[cls]
            try:
                boxes.append(Box(cid, *check_box(x1, y1, x2, y2, width, height, clip_px)))
            except ValueError as e:
                bad = f"box {k} ({names[cid]}): {e}"
                break
        if bad:
            reject(bad)
            continue
        key = tuple(sorted((b.cls, round(b.x1 * 2), round(b.y1 * 2), round(b.x2 * 2), round(b.y2 * 2))
                           for b in boxes))
        twins = seen_pixels.setdefault(pix, [])
        same = next((src for src, k in twins if k == key), None)
        if same is not None:
            reject(f"duplicate of {same} (same pixels, same boxes)")
            continue
        if twins:
            warnings.append(f"{it.source}: same pixels as {twins[0][0]} but a different annotation; "
                            "kept, and kept in the same split")
        twins.append((it.source, key))
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", it.image.stem)
        name = stem if stem not in taken_names else f"{stem}_{pix[:8]}"
        taken_names.add(name)
        samples.append(Sample(name=name, ext=it.image.suffix.lower(), data=data, width=width,
                              height=height, boxes=boxes, source=it.source, sha256=sha256_bytes(data),
                              pixel_sha256=pix))
    return names, samples, rejections, warnings


def source_fingerprint(src: str | Path) -> dict:
    """``source_hash``: sha256 over every file of the folder (relative path and content, sorted),
    and ``source_files``. What the dataset was imported from, for a source DVC does not watch."""
    src = Path(src)
    digest, n = hashlib.sha256(), 0
    for f in sorted((p for p in src.rglob("*") if p.is_file() or p.is_symlink()), key=lambda p: _rel(p, src)):
        data = os.fsencode(os.readlink(f)) if f.is_symlink() else f.read_bytes()  # a link: its text, not its target
        digest.update(f"{_rel(f, src)}\0{sha256_bytes(data)}\n".encode())
        n += 1
    return {"source_hash": digest.hexdigest(), "source_files": n}


def rare_classes(names: list[str], samples: list[Sample], min_boxes: int) -> dict[str, int]:
    """Classes with fewer than ``min_boxes`` boxes (``{name: boxes}``): with a discovered class
    list, usually a typo or a stray label."""
    counts = [0] * len(names)
    for s in samples:
        for b in s.boxes:
            counts[b.cls] += 1
    return {n: k for n, k in zip(names, counts) if k < min_boxes}


@dataclass(frozen=True)
class ImportOptions:
    """How to import a source: its format (``auto``, or one of ``FORMATS``), ``clip_px`` (boxes
    that leave the image by at most this many pixels are clipped, more is a quarantine reason),
    the expected ``classes`` (None: found in the source; then a class with fewer than
    ``min_class_boxes`` boxes is a warning, ``rare_classes`` in the summary),
    ``fingerprint_source`` (add :func:`source_fingerprint` of the source to the summary),
    ``near_dup_bits`` (canonical.write_dataset) and ``follow_symlinks`` ("never" or "inside",
    module docstring). The ``data`` settings carry the same names."""

    fmt: str
    clip_px: float
    classes: list[str] | None = None
    fingerprint_source: bool = False
    near_dup_bits: int | None = NEAR_DUP_BITS
    min_class_boxes: int = 0
    follow_symlinks: str = "never"


def import_dataset(src: str | Path, name: str, root: str | Path, opts: ImportOptions) -> dict:
    """Import ``src`` into ``root/name`` as ``opts`` says (:class:`ImportOptions`); return the
    summary. Raises ImportError_ when the source is unusable or no valid sample remains (the
    report is still written)."""
    fmt, clip_px, classes, follow_symlinks = opts.fmt, opts.clip_px, opts.classes, opts.follow_symlinks
    fingerprint_source, near_dup_bits = opts.fingerprint_source, opts.near_dup_bits
    min_class_boxes = opts.min_class_boxes
    src = Path(src).expanduser()
    if not src.is_dir():
        raise ImportError_(f"source folder not found: {src}"
                           + ("" if src.is_absolute() else f" (relative to {Path.cwd()})"))
    if fmt not in FORMATS:
        raise ImportError_(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if follow_symlinks not in FOLLOW:
        raise ImportError_(f"data.follow_symlinks must be one of {', '.join(FOLLOW)}, got '{follow_symlinks}'")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ImportError_(f"dataset name '{name}' must be letters, digits, '_', '-', '.'")
    src = src.resolve()
    dest_root = Path(root).resolve()
    if dest_root == src or src in dest_root.parents:
        raise ImportError_("the destination must not be inside the source folder")
    read = read_source(src, fmt, follow_symlinks)
    names, samples, rejections, warnings = _validate(read, clip_px, classes)
    extra = source_fingerprint(src) if fingerprint_source else {}
    if not classes:
        extra["rare_classes"] = rare_classes(names, samples, min_class_boxes)
        warnings += [f"class '{c}' has only {k} box(es), fewer than data.min_class_boxes ({min_class_boxes}): "
                     "a typo or a stray label? (kept; data.classes fixes the class list)"
                     for c, k in extra["rare_classes"].items()]
    try:  # a source inside the project is recorded relative to it, so the dataset hash is portable
        shown = src.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = str(src)
    summary = write_dataset(dest_root, name, Contents(names, samples, rejections, warnings), source=printable(shown),
                            fmt=read.layout, extra_summary=extra, near_dup_bits=near_dup_bits)
    if not samples:
        raise ImportError_(f"nothing usable in {src}: all {len(rejections)} sample(s) quarantined; "
                           f"see {dest_root / name / 'quarantine.md'}")
    return summary
