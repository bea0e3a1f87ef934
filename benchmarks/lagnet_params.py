"""Parameters and GFLOPs of LAGNet / LAGNet-s vs the paper's 31.9 M / 8.9 M, over neck widths
(``lagnet.width`` = P3 channels, P4 / P5 = 2x / 4x, C3 depth 1), and of every Table 4 row (LAM
branch, SCEM on/off) at the paper width.

    python -m benchmarks.lagnet_params [--nc 6] [--depth 1]

The paper does not give its neck width or C3 depth; ``PAPER_WIDTH`` (components/models/
lagnet_yolo.py) are the widths at which the models have the paper's size. Its YOLOv5 anchor head
with objectness is smaller than ultralytics' anchor-free Detect (3x3 conv branches), so at equal
size our neck has fewer C3 repeats (1) than YOLOv5-L's (3). The dual MobileNetV3 backbone alone is
the part that is comparable.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ultralytics.utils.torch_utils import get_num_params

from components.evaluate import model_gflops
from components.models.detect import DefectDetectionModel
from components.detectors.lagnet.config import (PAPER_PARAMS_M, PAPER_TABLE4, PAPER_WIDTH, TABLE4, VARIANTS, LagnetToggles,
                                           lagnet_cfg, write_lagnet_yaml)

from .common import cli, machine, write

COLUMNS = ["model", "width", "depth", "LAM", "SCEM", "params (M)", "backbone + LGB (M)", "neck (M)", "SCEM (M)",
           "head (M)", "paper params (M)", "vs paper (%)", "GFLOPs@640", "GFLOPs@224"]
# lagnet.md Table 4, MobileNetV3 rows (params); the paper has no MobileNetV3 row without both
PAPER_TABLE4_PARAMS = {"baseline": "", "+LAM": 25.7, "+SCEM": 28.6, "+LAM+SCEM": 32.2}


def parts(m) -> dict[str, float]:
    """Parameters (M) of the backbone (layer 0), the LagPAN neck (layer 1), the SCEMs, the head."""
    n = {"backbone + LGB (M)": 0, "neck (M)": 0, "SCEM (M)": 0, "head (M)": 0}
    for layer in m.model:
        key = {"LagPAN": "neck (M)", "SCEM": "SCEM (M)", "Detect": "head (M)"}.get(type(layer).__name__)
        key = key or ("backbone + LGB (M)" if layer.i == 0 else None)
        if key:
            n[key] += get_num_params(layer)
    return {k: round(v / 1e6, 3) for k, v in n.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nc", type=int, default=6)
    ap.add_argument("--depth", type=int, default=1, help="C3 repeats in the neck")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def row(name, variant, width, paper, toggles=LagnetToggles()):
            cfg = write_lagnet_yaml(Path(tmp) / f"{variant}{width}{toggles.lam}{toggles.scem}",
                                    lagnet_cfg(variant, width, 5, 2, a.nc, toggles, depth=a.depth))
            m = DefectDetectionModel(str(cfg), nc=a.nc, verbose=False)
            p = get_num_params(m) / 1e6
            rows.append({"model": name, "width": width, "depth": a.depth, "LAM": toggles.lam, "SCEM": toggles.scem,
                         "params (M)": round(p, 3), **parts(m), "paper params (M)": paper,
                         "vs paper (%)": round(100 * (p / paper - 1), 1) if paper else "",
                         "GFLOPs@640": round(model_gflops(m, 640), 2), "GFLOPs@224": round(model_gflops(m, 224), 2)})

        for variant in ("large", "small"):
            for width in sorted({32, 64, 128, PAPER_WIDTH[variant]}):
                row(VARIANTS[variant], variant, width, PAPER_PARAMS_M[variant])
        for name, t in TABLE4.items():
            row(f"Table 4 {name}", "large", PAPER_WIDTH["large"], PAPER_TABLE4_PARAMS[name], t)
    payload = {"machine": machine(), "command": cli(), "nc": a.nc, "depth": a.depth, "paper_width": PAPER_WIDTH,
               "rows": rows, "paper_table4_mAP": PAPER_TABLE4}
    print(write("lagnet_params", payload, rows, COLUMNS,
                f"LAGNet parameters and GFLOPs (nc={a.nc}, SCEM k=5 n=2, neck C3 depth {a.depth})"))


if __name__ == "__main__":
    main()
