"""The inbox (``defectops retrain``): new samples arriving after the first dataset. Files dropped
into the inbox form a *batch*; what the batch yields after validation is an *increment* (a
canonical dataset merged into the base one); the batch's files are then archived.

A batch dropped into the inbox (VOC or YOLO layout) is validated by the same importer as any
dataset (``importers``: unreadable images, bad boxes, unknown classes... quarantined with their
reasons; a clean sample, an image with an empty YOLO label file or a VOC XML without ``<object>``,
is kept and counted as ``clean_images``); on top of that a sample whose pixels already exist in the dataset is quarantined (it
could sit in the test split, and a copy in train would leak it), and so is a near-copy of a test
image (the same Roboflow source name, or a perceptual near-duplicate at the dataset's
``near_dup_bits``: split.source_groups); other near-copies are grouped with their originals by
the split. Symlinks in the inbox are quarantined, never followed out. What is left becomes one
canonical dataset ``<increments>/<batch id>`` (sample names prefixed with the batch id), written
atomically; the batch id is a hash of the inbox files, so a rerun after a crash finds the same
batch. ``merge`` appends every increment to the base dataset (the ``data`` stage); the split keeps
the base test split fixed and deals increment images to train/val only (``split.add_increments``).

``ingest`` only ever reads the inbox; ``archive_batch`` (copy, verify, then delete) is the retrain
flow's last data step, once the increment's dataset version is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable

from .canonical import Box, Contents, Rejection, Sample, load_manifest, perceptual_hashes, write_dataset
from .importers import FOLLOW, ImportError_, ImportOptions, _validate, read_source
from .split import hash_array, hash_distances, roboflow_source

BATCH_FILE = "batch.json"          # inside an increment: the inbox files it was made from
REVIEW_FILE = "review.json"        # a review folder's provenance (``defectops review pull`` writes it)
PROVENANCE = ("prediction_id", "model_version", "reviewer", "reviewed_at", "task_id", "reason")


def inbox_files(inbox: Path) -> dict[str, str]:
    """Every regular file under ``inbox`` (hidden files and folders skipped; symlinks too: never
    read, they stay in the inbox and are reported by ``ingest``): ``{path relative to the inbox:
    sha256}``, sorted by path. Hashed once; everything downstream uses these."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return {}
    files = sorted(p for p in inbox.rglob("*") if p.is_file() and not p.is_symlink()
                   and not any(part.startswith(".") for part in p.relative_to(inbox).parts))
    return {p.relative_to(inbox).as_posix(): file_sha256(p) for p in files}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def batch_id(files: dict[str, str]) -> str:
    """Content id of a batch: hash of (relative path, sha256) of its files."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}|{files[rel]}\n".encode(errors="surrogateescape"))   # any file name
    return "b" + h.hexdigest()[:11]


def samples_of(dataset_dir: Path) -> tuple[list[str], list[Sample], list[Rejection]]:
    """Read a canonical dataset back as samples (for merging), with its quarantine."""
    dataset_dir = Path(dataset_dir)
    m = load_manifest(dataset_dir)
    samples = []
    for e in m["images"]:
        extra = {k: v for k, v in e.items() if k not in {"name", "image", "label", "source", "sha256",
                                                         "pixel_sha256", "width", "height", "boxes"}}
        samples.append(Sample(name=e["name"], ext=Path(e["image"]).suffix, data=(dataset_dir / e["image"]).read_bytes(),
                              width=e["width"], height=e["height"], boxes=[Box(*b) for b in e["boxes"]],
                              source=e["source"], sha256=e["sha256"], pixel_sha256=e["pixel_sha256"], extra=extra))
    q = dataset_dir / "quarantine.json"
    rejections = [Rejection(**r) for r in json.loads(q.read_text())] if q.is_file() else []
    return m["classes"], samples, rejections


def ingest(inbox: Path, files: dict[str, str], batch: str, out_root: Path, existing: Path, opts: ImportOptions,
           test: Iterable[str] | None = None) -> dict:
    """Validate the inbox batch ``files`` (``inbox_files``' relative path -> sha256), read as
    ``opts`` says (its ``fmt``, ``clip_px`` and ``follow_symlinks``; the classes and the
    near-duplicate distance are the dataset's), against the dataset ``existing`` (its classes,
    its images; ``test``: the names of its test split, None: any base image may be a test image)
    and write the accepted samples, the quarantine report and ``batch.json`` to
    ``out_root/<batch>`` (atomically). Returns the increment's summary. Raises ``ImportError_``
    when nothing is usable (the report is written all the same)."""
    fmt, clip_px, follow_symlinks = opts.fmt, opts.clip_px, opts.follow_symlinks
    inbox = Path(inbox).resolve()
    manifest = load_manifest(existing)
    classes, bits = manifest["classes"], manifest.get("near_dup_bits")   # None: no perceptual grouping
    known = {e["pixel_sha256"]: e["name"] for e in manifest["images"]}
    test = None if test is None else set(test)
    guard = [e for e in manifest["images"] if "batch" not in e and (test is None or e["name"] in test)]
    who = "test image" if test is not None else "dataset image (maybe a test image)"
    guard_rf = {roboflow_source(e["source"]): e["name"] for e in guard if roboflow_source(e["source"])}
    guard = [e for e in guard if e.get("phash")] if bits is not None else []
    guard_hashes = hash_array(guard) if guard else None
    if follow_symlinks not in FOLLOW:
        raise ImportError_(f"data.follow_symlinks must be one of {', '.join(FOLLOW)}, got '{follow_symlinks}'")
    read = read_source(inbox, fmt, follow_symlinks)
    listed = {inbox / rel for rel in files}
    read.items = [it for it in read.items if it.image is None or Path(it.image) in listed]
    _, samples, rejections, warnings = _validate(read, clip_px, classes)
    provenance = review_provenance(inbox, files)
    kept = []
    for s in samples:
        if s.pixel_sha256 in known:
            rejections.append(Rejection(s.source, f"same pixels as '{known[s.pixel_sha256]}' already in the "
                                                  "dataset (would leak across splits)"))
            continue
        rf, phash = roboflow_source(s.source), perceptual_hashes(s.data)
        if rf in guard_rf:
            rejections.append(Rejection(s.source, f"same Roboflow source '{rf}' as {who} '{guard_rf[rf]}' "
                                                  "(would leak into the test split)"))
            continue
        if guard_hashes is not None:
            d = hash_distances(hash_array([{"phash": phash}]), guard_hashes)[0]
            if d.min() <= bits:
                rejections.append(Rejection(s.source, f"near-copy of {who} '{guard[int(d.argmin())]['name']}' "
                                                      f"(pHash distance {d.min()} <= data.near_dup_bits {bits}; "
                                                      "would leak into the test split)"))
                continue
        kept.append(Sample(name=f"{batch}_{s.name}", ext=s.ext, data=s.data, width=s.width, height=s.height,
                           boxes=s.boxes, source=f"{batch}/{s.source}", sha256=s.sha256,
                           pixel_sha256=s.pixel_sha256, extra={"batch": batch, "phash": phash,
                                                               **provenance.get(s.sha256, {})}))
    out_root = Path(out_root)
    summary = write_dataset(out_root, batch, Contents(classes, kept, rejections, warnings),
                            source=f"inbox batch {batch}", fmt=read.layout, near_dup_bits=bits)
    (out_root / batch / BATCH_FILE).write_text(json.dumps({"batch": batch, "files": files}, indent=1))
    if not kept:
        raise ImportError_(f"batch {batch}: all {len(rejections)} sample(s) quarantined; see "
                           f"{out_root / batch / 'quarantine.md'}")
    return summary


def review_provenance(inbox: Path, files: dict[str, str]) -> dict[str, dict]:
    """What the review folders of the batch (``review.json``, written by ``defectops review pull``)
    say of each image: {image sha256: {"review": {prediction id, model version, reviewer, ...}}},
    kept in the increment's manifest beside the sample. A review file that cannot be read is
    skipped (its images are still validated as any other)."""
    out = {}
    for rel, sha in files.items():
        if Path(rel).name != REVIEW_FILE:
            continue
        try:
            doc = json.loads((inbox / rel).read_text())
            for s in doc["samples"]:
                image = files.get((Path(rel).parent / s["image"]).as_posix())
                if image:
                    out[image] = {"review": {"project_id": doc.get("project_id"),
                                             **{k: s.get(k) for k in PROVENANCE}}}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def increment_dirs(increments: Path) -> list[Path]:
    """Accepted increments (canonical datasets, not the rejected-only reports), in batch order."""
    increments = Path(increments)
    if not increments.is_dir():
        return []
    return sorted(d for d in increments.iterdir() if d.is_dir() and re.fullmatch(r"b[0-9a-f]{11}", d.name)
                  and (d / "manifest.json").is_file())


def merge(root: Path, name: str, increments: Path) -> dict | None:
    """Append every increment to the canonical dataset ``root/name`` (rewritten atomically).
    Increment samples keep a ``batch`` field; pixels already present are skipped (reported).
    Returns the new summary, or None when there is no increment."""
    incs = increment_dirs(increments)
    if not incs:
        return None
    ds = Path(root) / name
    bits = load_manifest(ds).get("near_dup_bits")
    classes, samples, rejections = samples_of(ds)
    base = json.loads((ds / "summary.json").read_text())
    seen = {s.pixel_sha256: s.name for s in samples}
    added = {}
    for inc in incs:
        inc_classes, inc_samples, _ = samples_of(inc)
        if inc_classes != classes:
            raise ValueError(f"increment {inc.name} has classes {inc_classes}, the dataset {classes}")
        n = 0
        for s in inc_samples:
            if s.pixel_sha256 in seen:
                rejections.append(Rejection(s.source, f"same pixels as '{seen[s.pixel_sha256]}' (skipped at merge)"))
                continue
            seen[s.pixel_sha256] = s.name
            samples.append(s)
            n += 1
        added[inc.name] = n
    return write_dataset(Path(root), name, Contents(classes, samples, rejections, base.get("warnings")),
                         source=base["source"], fmt=base["format"], near_dup_bits=bits,
                         extra_summary={"increments": added, **{k: base[k] for k in ("rare_classes",) if k in base}})


ARCHIVED = "ARCHIVED"          # marker in archive/<batch>/ once every inbox file of the batch is there


def batch_files(increment: Path) -> dict[str, str]:
    """The inbox files (relative path -> sha256) an increment was made from (its ``batch.json``)."""
    return json.loads((Path(increment) / BATCH_FILE).read_text())["files"]


def archive_batch(inbox: Path, archive: Path, batch: str, files: dict[str, str], report: Path | None) -> int:
    """Move the batch's inbox files to ``archive/<batch>/`` (copy, verify, then delete), with the
    quarantine report; idempotent. Returns the number of files moved by this call."""
    inbox, dest = Path(inbox), Path(archive) / batch
    moved = 0
    for rel, sha in files.items():
        src, dst = inbox / rel, dest / "files" / rel
        if not (dst.is_file() and file_sha256(dst) == sha):
            if not src.is_file():
                raise FileNotFoundError(f"{src} (batch {batch}) is neither in the inbox nor archived")
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".part")
            shutil.copy2(src, tmp)
            if file_sha256(tmp) != sha:
                raise OSError(f"{src} changed while archiving batch {batch}; left in the inbox")
            os.replace(tmp, dst)
        if src.is_file() and file_sha256(src) == sha:
            src.unlink()
            moved += 1
    for d in sorted((p for p in inbox.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()                                   # empty sub-folders the batch came in
    if report:
        for f in ("quarantine.md", "quarantine.json"):
            if (Path(report) / f).is_file():
                shutil.copy2(Path(report) / f, dest / f)
    (dest / ARCHIVED).write_text(json.dumps({"batch": batch, "files": len(files)}))
    return moved
