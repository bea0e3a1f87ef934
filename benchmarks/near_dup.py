"""Near-duplicate detection (split.source_groups): both error rates of the pHash threshold.

    python -m benchmarks.near_dup [--per-class 100] [--seed 0]

* **False merges**: every pair of NEU-DET images (../shared/datasets/neu-det, 1800 photos, 300
  per class of six steel-surface textures: different photos of one product line) at a hash
  distance <= t, less the pairs in ``KNOWN``: copies of one photo that NEU-DET itself holds
  (checked by eye; several are 90-degree turns of each other), which are right to merge.
* **Misses**: augmented copies of ``--per-class`` images per class (flips, quarter turn, crops,
  brightness, small rotations, JPEG re-encoding, and a Roboflow-like mix) at a distance > t
  from their original.

Hashes and distances are the production ones (canonical.perceptual_hashes, split.hash_distances).
Chosen: the largest t whose false merges stay under ``MAX_FALSE_RATE`` of all pairs (a false merge
only puts two images in one split; a miss leaks a copy into the test set). Writes
``results/near_dup.{json,md}``; nothing else is written.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from components.data.canonical import PHASH_SIZE, perceptual_hashes
from components.data.split import hash_array, hash_distances

from .common import cli, machine, write

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"
KNOWN = [("patches_101", "patches_105"), ("scratches_232", "scratches_247"), ("scratches_221", "scratches_243"),
         ("scratches_27", "scratches_295"), ("pitted_surface_171", "pitted_surface_292"), ("patches_189", "patches_193"),
         ("inclusion_88", "inclusion_125"), ("inclusion_188", "inclusion_210"), ("inclusion_235", "inclusion_245")]
MAX_FALSE_RATE = 5e-6            # of all distinct pairs: ~8 of NEU-DET's 1.6 M
THRESHOLDS = list(range(0, 121, 4))


def _crop(im: Image.Image, frac: float, rng) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * (1 - frac)), round(h * (1 - frac))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _rotate(im: Image.Image, deg: float, rng) -> Image.Image:
    return im.rotate(deg * rng.choice([-1, 1]), resample=Image.Resampling.BILINEAR)   # black corners


AUGMENTS = {
    "flip horizontal": lambda im, r: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip vertical": lambda im, r: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "quarter turn": lambda im, r: im.transpose(Image.Transpose.ROTATE_90),
    "brightness +20 %": lambda im, r: ImageEnhance.Brightness(im).enhance(1.2),
    "brightness -20 %": lambda im, r: ImageEnhance.Brightness(im).enhance(0.8),
    "JPEG re-encode q60": lambda im, r: _jpeg(im, 60),
    "crop 5 %": lambda im, r: _crop(im, 0.05, r),
    "crop 10 %": lambda im, r: _crop(im, 0.10, r),
    "rotate 3 deg": lambda im, r: _rotate(im, 3, r),
    "rotate 5 deg": lambda im, r: _rotate(im, 5, r),
    "mix: flip, crop 5 %, brightness +-10 %, q75": lambda im, r: _jpeg(ImageEnhance.Brightness(_crop(
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.05, r)).enhance(float(r.uniform(0.9, 1.1))), 75),
}


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _largest_group(n: int, pairs: np.ndarray) -> int:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    return int(np.bincount([find(i) for i in range(n)]).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100, help="originals per class for the augmented copies")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    files = sorted((NEU / "IMAGES").glob("*.jpg"))
    if len(files) != 1800:
        raise SystemExit(f"need NEU-DET's 1800 images under {NEU / 'IMAGES'}, found {len(files)}")
    stems = [f.stem for f in files]
    t0 = time.perf_counter()
    hashes = hash_array([{"phash": perceptual_hashes(f.read_bytes())} for f in files])
    hash_s = (time.perf_counter() - t0) / len(files)
    n = len(files)
    dist = np.concatenate([hash_distances(hashes[i:i + 64], hashes) for i in range(0, n, 64)])
    iu = np.triu_indices(n, 1)
    pair_d = dist[iu]
    pos = {s: i for i, s in enumerate(stems)}
    known = np.zeros((n, n), bool)
    for x, y in KNOWN:
        known[min(pos[x], pos[y]), max(pos[x], pos[y])] = True
    is_known = known[iu]
    false_d, known_d = pair_d[~is_known], pair_d[is_known]

    rng = np.random.default_rng(a.seed)
    classes = sorted({s.rsplit("_", 1)[0] for s in stems})
    picks = [i for c in classes for i in rng.choice([i for i, s in enumerate(stems) if s.startswith(c + "_")],
                                                    a.per_class, replace=False)]
    miss_d: dict[str, np.ndarray] = {}
    for name, aug in AUGMENTS.items():
        copies = [{"phash": perceptual_hashes(_png(aug(Image.open(files[i]).convert("L"), rng)))} for i in picks]
        d = hash_distances(hash_array(copies), hashes[picks])
        miss_d[name] = np.diag(d)
        print(f"{name}: median distance {np.median(miss_d[name]):.0f}", flush=True)
    all_miss = np.concatenate(list(miss_d.values()))

    rows = []
    for t in sorted(set(THRESHOLDS) | {int(false_d.min()) - 1}):
        fm = int((false_d <= t).sum())
        flagged = np.argwhere(np.triu(dist <= t, 1))
        rows.append({"max_bits": t, "false_merges": fm, "false_merge_rate": fm / false_d.size,
                     "images_falsely_merged": int(np.unique(np.argwhere(np.triu(dist <= t, 1) & ~known)).size),
                     "largest_group": _largest_group(n, flagged),
                     "known_copies_found": f"{int((known_d <= t).sum())}/{len(KNOWN)}",
                     "miss_rate": float((all_miss > t).mean()),
                     **{f"miss {k}": float((v > t).mean()) for k, v in miss_d.items()}})
    chosen = max(r["max_bits"] for r in rows if r["false_merge_rate"] <= MAX_FALSE_RATE)
    pick = next(r for r in rows if r["max_bits"] == chosen)
    payload = {"machine": machine(), "command": cli(), "dataset": str(NEU), "images": n,
               "hash": f"imagehash pHash {PHASH_SIZE}x{PHASH_SIZE} ({PHASH_SIZE ** 2} bits), 8 flips/quarter turns",
               "distinct_pairs": int(false_d.size), "known_copies": KNOWN,
               "known_copy_distances": {f"{x}/{y}": int(dist[pos[x], pos[y]]) for x, y in KNOWN},
               "closest_false_pairs": [{"pair": f"{stems[i]}/{stems[j]}", "distance": int(dist[i, j])}
                                       for i, j in sorted(zip(*np.nonzero(np.triu(dist <= chosen + 8, 1) & ~known)),
                                                          key=lambda p: dist[p])[:10]],
               "augmented_copies": {k: len(v) for k, v in miss_d.items()},
               "copy_distance_percentiles": {k: np.percentile(v, [50, 90, 99]).tolist() for k, v in miss_d.items()},
               "hash_ms_per_image": round(hash_s * 1000, 2), "max_false_rate": MAX_FALSE_RATE,
               "chosen_max_bits": chosen, "chosen": pick, "rows": rows}
    table = [{k: (f"{v:.2%}" if k.startswith("miss") else f"{v:.1e}" if k == "false_merge_rate" else v)
              for k, v in r.items()} for r in rows]
    notes = (f"Chosen `data.near_dup_bits: {chosen}`, the largest threshold with at most {MAX_FALSE_RATE:g} of "
             f"the {false_d.size} distinct NEU-DET pairs merged: {pick['false_merges']} false merge(s) "
             f"({pick['images_falsely_merged']} images), {pick['known_copies_found']} of NEU-DET's own copies "
             f"found, {pick['miss_rate']:.1%} of the {all_miss.size} augmented copies missed ("
             + ", ".join(f"{k} {pick['miss ' + k]:.1%}" for k in AUGMENTS) + f"). No false merge up to "
             f"{int(false_d.min()) - 1} bits. pHash of one image and its 8 variants: {hash_s * 1000:.1f} ms.")
    print(write("near_dup", payload, table, ["max_bits", "false_merges", "false_merge_rate", "images_falsely_merged",
                                              "largest_group", "known_copies_found", "miss_rate",
                                              *[f"miss {k}" for k in AUGMENTS]],
                "Near-duplicate threshold: false merges on NEU-DET vs missed augmented copies", notes))
    print(notes)


if __name__ == "__main__":
    main()
