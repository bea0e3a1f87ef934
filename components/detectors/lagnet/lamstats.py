"""What the LAM stage reports besides the maps: which images it makes LAMs of, their contrast per
split and a grid of test LAMs with their ground-truth boxes (``pipelines/lam.py``).

- :class:`LamImages`: the canonical dataset's images as the stage addresses them (absolute image
  path, ground-truth boxes per image, class names).
- :func:`contrast_by_split`: the mean contrast of the LAMs ``make_lams`` measured (raw and
  normalised confidence, luminance of the JET colour, inside vs outside the boxes) per split.
- :func:`sample_grid`: test LAMs, coloured as LAGNet sees them (``lam_image``), tiled with their boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coding import LamCoding

CONTRAST = ("conf_in", "conf_out", "norm_in", "norm_out", "jet_in", "jet_out")


@dataclass(frozen=True)
class LamImages:
    """A canonical dataset (``root`` with its manifest's ``entries`` by name and ``classes``)."""

    root: Path
    entries: dict[str, dict]
    classes: list[str]

    @classmethod
    def of(cls, root: Path, manifest: dict) -> "LamImages":
        return cls(Path(root), {e["name"]: e for e in manifest["images"]}, list(manifest["classes"]))

    def path(self, name: str) -> str:
        """The image's absolute path (the key ``make_lams`` answers by)."""
        return str((self.root / self.entries[name]["image"]).resolve())

    def boxes(self, names: list[str]) -> dict[str, list]:
        """Each image's ground-truth boxes (xyxy pixels) by path: what ``make_lams`` measures the contrast in."""
        return {self.path(n): [b[1:] for b in self.entries[n]["boxes"]] for n in names}


def contrast_by_split(made: dict[str, dict], split: dict, images: LamImages) -> dict[str, dict]:
    """Per split of ``split`` (train, val, test; those with measured images): its image count and
    the mean of each ``CONTRAST`` figure over its images (``made``: ``make_lams``' answers by image path)."""
    from ...data.views import SPLITS

    stats = {}
    for s in SPLITS:
        names = split[s]
        rows = [made[images.path(n)] for n in names if "conf_in" in made.get(images.path(n), {})]
        if rows:
            stats[s] = {"images": len(names), **{k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in CONTRAST}}
    return stats


def sample_grid(lam_dir: Path, names: list[str], images: LamImages, coding: LamCoding, dest: Path) -> Path | None:
    """The LAMs of ``names`` (read back from ``lam_dir``, at the loader's scale: resized to the
    image) coloured by ``coding`` and tiled with their ground-truth boxes and class names into
    ``dest``; None when ``names`` is empty."""
    import cv2

    from .lam import lam_grid, lam_image, lam_path

    samples = []
    for n in names:
        src = images.path(n)
        conf = cv2.imread(str(lam_path(lam_dir, src)), cv2.IMREAD_UNCHANGED)
        img = cv2.imread(src)
        conf = cv2.resize(conf, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        boxes = images.entries[n]["boxes"]
        samples.append((lam_image(img, conf / 255.0, coding), np.asarray([b[1:] for b in boxes]).reshape(-1, 4),
                        [images.classes[int(b[0])] for b in boxes]))
    return lam_grid(samples, dest) if samples else None
