"""The canonical dataset every detector in the project reads.

Layout under ``ROOT/NAME``::

    images/<stem><ext>     image bytes copied unchanged from the source
    labels/<stem>.txt      YOLO format: ``class cx cy w h`` normalised to [0, 1]
    dataset.yaml           class names in order
    manifest.json          one entry per image: source, sha256 of the file, sha256 of the
                           decoded pixels, perceptual hashes (``phash``), size, boxes; plus the
                           dataset content hash and the near-duplicate threshold ``near_dup_bits``
    summary.json           images, boxes, clean_images (no boxes: defect-free parts), classes,
                           quarantined, per-class box counts, content_hash,
                           source groups (``groups``, ``near_duplicate_pairs``: split.source_groups)
    quarantine.json        every rejected sample with its reason (also quarantine.md)

The dataset is written to a temporary sibling folder and renamed into place, so a crash
never leaves a half-written dataset behind, and the source folder is only ever read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

log = logging.getLogger(__name__)

# Perceptual hash: imagehash's pHash at 16x16 = 256 bits, of the image and of its 7 flips and
# quarter turns. Two images are near-duplicates when some variant pair differs in at most
# ``near_dup_bits`` bits (data.near_dup_bits; measured by benchmarks/near_dup.py).
PHASH_SIZE = 16
NEAR_DUP_BITS = 80
_DIHEDRAL = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_90,
             Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270, Image.Transpose.TRANSPOSE,
             Image.Transpose.TRANSVERSE)


@dataclass(frozen=True)
class Box:
    """One object in pixel coordinates of its image (x2 > x1, y2 > y1)."""

    cls: int
    x1: float
    y1: float
    x2: float
    y2: float

    def yolo_line(self, width: int, height: int) -> str:
        cx, cy = (self.x1 + self.x2) / 2 / width, (self.y1 + self.y2) / 2 / height
        w, h = (self.x2 - self.x1) / width, (self.y2 - self.y1) / height
        return f"{self.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


@dataclass
class Sample:
    """A validated image with its boxes, ready to be written."""

    name: str                 # canonical stem (unique within the dataset)
    ext: str                  # ".jpg", ".png" ...
    data: bytes               # image file bytes, unchanged
    width: int
    height: int
    boxes: list[Box]
    source: str               # where it came from (relative source path or generator id)
    sha256: str               # of the file bytes
    pixel_sha256: str         # of the decoded pixels: identical images share it
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    source: str
    reason: str


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_format(data: bytes) -> str | None:
    """The image format whose magic bytes start ``data`` (PIL's plugins' own checks, on the first
    16 bytes as ``Image.open`` reads them), or None: a text file named ``.jpg`` is no image."""
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(data[:16]):
                return fmt
        except (IndexError, SyntaxError, TypeError, struct.error):   # too short for that check (as PIL)
            continue
    return None


def decode_image(data: bytes) -> tuple[int, int, str]:
    """Fully decode image bytes; return (width, height, sha256 of RGB pixels) or raise ValueError.
    An image whose header declares more than ``MAX_PIXELS`` pixels (the one limit of every decoder in
    the project: ``components.deploy.serving``) is refused before it is decoded."""
    from components.deploy.serving import ImageTooLarge, check_pixels

    try:
        check_pixels(data)
    except ImageTooLarge as e:
        raise ValueError(str(e)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                rgb = im.convert("RGB")
    except UnidentifiedImageError as e:
        fmt = image_format(data)
        if fmt:
            raise ValueError(f"corrupt or truncated {fmt} image (PIL cannot read its header)") from e
        raise ValueError("not an image (its first bytes match no image format PIL knows)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"not a readable image ({type(e).__name__})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"unreadable or truncated image ({e})") from e
    except Exception as e:  # noqa: BLE001  a decoder plug-in failing is still a bad image, not a crash
        raise ValueError(f"not a readable image ({type(e).__name__}: {e})") from e
    if rgb.width < 1 or rgb.height < 1:
        raise ValueError("image has zero size")
    return rgb.width, rgb.height, sha256_bytes(rgb.tobytes())


def perceptual_hashes(data: bytes) -> list[str]:
    """pHash (imagehash, ``PHASH_SIZE`` squared bits, hex) of the image and of its flipped and rotated
    variants (``_DIHEDRAL`` order): a flipped or rotated copy has one of them close to the original's."""
    import imagehash

    with Image.open(io.BytesIO(data)) as im:   # pHash's own 4x thumbnail, made once for the 8 variants
        small = im.convert("L").resize((4 * PHASH_SIZE,) * 2, Image.Resampling.LANCZOS)
    return [str(imagehash.phash(small if t is None else small.transpose(t), hash_size=PHASH_SIZE))
            for t in _DIHEDRAL]


def content_hash(entries: list[dict], class_names: list[str]) -> str:
    """Hash of what a model sees: class names, image bytes and labels, order-independent."""
    h = hashlib.sha256(json.dumps(class_names).encode())
    for e in sorted(entries, key=lambda e: e["name"]):
        h.update(f"{e['name']}|{e['sha256']}|{json.dumps(e['boxes'])}\n".encode())
    return h.hexdigest()[:16]


TEMP_RE = re.compile(r"^\.(?P<name>.+?)\.(?:old\.)?p(?P<pid>\d+)t(?P<t>\d+)\.[^.]+$")
UNTAGGED_STALE_S = 600          # an untagged ``.NAME.<random>`` folder (older code) this old is stale


def owner_tag(pid: int | None = None) -> str:
    """``p<pid>t<start time>``: which process owns a temporary folder (pids are reused, start
    times tell them apart)."""
    import psutil

    proc = psutil.Process(pid or os.getpid())
    return f"p{proc.pid}t{int(proc.create_time())}"


def _owner_alive(pid: int, t: int) -> bool:
    import psutil

    try:
        return int(psutil.Process(pid).create_time()) == t
    except psutil.Error:
        return False


def clean_stale_temps(root: Path) -> list[Path]:
    """Remove the temporary dataset folders (``.NAME.p<pid>t<time>.<random>``, ``.NAME.old...``)
    that a killed command left in ``root``: those whose owner process is gone (untagged ones from
    older versions: when older than ``UNTAGGED_STALE_S``). A running import's folder is kept."""
    import time

    removed = []
    if not Path(root).is_dir():
        return removed
    for d in Path(root).iterdir():
        if not d.name.startswith(".") or not d.is_dir() or d.is_symlink():
            continue
        m = TEMP_RE.match(d.name)
        if m:
            stale = not _owner_alive(int(m["pid"]), int(m["t"]))
        else:
            stale = (re.match(r"^\.[\w.-]+\.(old\.)?[a-z0-9_]{8}$", d.name) is not None
                     and time.time() - d.stat().st_mtime > UNTAGGED_STALE_S)
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    if removed:
        log.warning("removed %d temporary folder(s) left by an interrupted command in %s: %s", len(removed), root,
                    ", ".join(d.name for d in removed))
    return removed


@dataclass
class Contents:
    """What a canonical dataset is written from: its class names, the accepted samples, the
    quarantined ones with their reasons, and the warnings of the import (kept in the summary
    and the quarantine report)."""

    class_names: list[str]
    samples: list[Sample]
    rejections: list[Rejection] = field(default_factory=list)
    warnings: list[str] | None = None


def write_dataset(root: Path, name: str, contents: Contents, source: str, fmt: str,
                  extra_summary: dict | None = None, near_dup_bits: int | None = None) -> dict:
    """Write the canonical dataset ``contents`` (:class:`Contents`) atomically as ``root/name``,
    recording where it came from (``source``, ``fmt``); return its summary (plus
    ``extra_summary``). Samples without ``phash`` in ``extra`` get their perceptual hashes here;
    the summary reports the source groups at ``near_dup_bits`` (None, as for generated data: pixel
    and Roboflow-name groups only), which the manifest records for the split."""
    class_names, samples, rejections, warnings = (contents.class_names, contents.samples, contents.rejections,
                                                  contents.warnings)
    from .split import source_groups

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists() and any(final.iterdir()) and not (final / "manifest.json").is_file():
        raise FileExistsError(f"{final} exists and is not a canonical dataset (no manifest.json): "
                              "refusing to replace it; choose another --name or --root")
    clean_stale_temps(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{owner_tag()}.", dir=root))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        entries = []
        per_class = [0] * len(class_names)
        for s in tqdm(samples, desc="write", unit="img", leave=False):
            if "phash" not in s.extra:
                s.extra["phash"] = perceptual_hashes(s.data)
            (tmp / "images" / f"{s.name}{s.ext}").write_bytes(s.data)
            lines = [b.yolo_line(s.width, s.height) for b in s.boxes]
            (tmp / "labels" / f"{s.name}.txt").write_text("".join(l + "\n" for l in lines))
            for b in s.boxes:
                per_class[b.cls] += 1
            entries.append({
                "name": s.name, "image": f"images/{s.name}{s.ext}", "label": f"labels/{s.name}.txt",
                "source": s.source, "sha256": s.sha256, "pixel_sha256": s.pixel_sha256,
                "width": s.width, "height": s.height,
                "boxes": [[b.cls, round(b.x1, 2), round(b.y1, 2), round(b.x2, 2), round(b.y2, 2)]
                          for b in s.boxes],
                **s.extra,
            })
        chash = content_hash(entries, class_names)
        groups, near_pairs = source_groups(entries, near_dup_bits)
        summary = {
            "name": name, "source": source, "format": fmt,
            "images": len(samples), "boxes": sum(per_class),
            "clean_images": sum(not s.boxes for s in samples),
            "classes": list(class_names),
            "boxes_per_class": dict(zip(class_names, per_class)),
            "quarantined": len(rejections),
            "content_hash": chash,
            "warnings": list(warnings or []),
            "groups": {"count": len(groups), "largest": max(map(len, groups), default=0)},
            "near_duplicate_pairs": near_pairs,
            **(extra_summary or {}),
        }
        (tmp / "dataset.yaml").write_text(yaml.safe_dump(
            {"names": dict(enumerate(class_names)), "nc": len(class_names)}, sort_keys=False))
        (tmp / "manifest.json").write_text(json.dumps(
            {"content_hash": chash, "classes": list(class_names), "near_dup_bits": near_dup_bits,
             "images": entries}, indent=1))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        write_quarantine_report(tmp, rejections, summary["warnings"])
        os.chmod(tmp, 0o755)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.{owner_tag()}.", dir=root))
            old.rmdir()
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (``os.fsdecode``'s surrogates) shown as
    ``\\xNN`` escapes, so any name can be written to a UTF-8 report."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_quarantine_report(folder: Path, rejections: list[Rejection], warnings: list[str]) -> None:
    rows = [{k: printable(v) for k, v in asdict(r).items()} for r in rejections]
    (folder / "quarantine.json").write_text(json.dumps(rows, indent=1))
    md = ["| source | reason |", "|---|---|"] + [
        f"| `{r['source']}` | {r['reason'].replace('|', '/')} |" for r in rows]
    warnings = [printable(w) for w in warnings]
    (folder / "quarantine.md").write_text(
        f"# Quarantine: {len(rejections)} rejected sample(s)\n\n" + "\n".join(md) + "\n"
        + (f"\n## Warnings (kept)\n\n" + "".join(f"- {w}\n" for w in warnings) if warnings else ""),
        encoding="utf-8")


def load_manifest(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{dataset_dir} is not a canonical dataset (no manifest.json); "
                                "create it with `defectops data import` or `defectops data synth`")
    return json.loads(path.read_text())
