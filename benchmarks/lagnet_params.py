"""Parameters and GFLOPs of LAGNet / LAGNet-s vs the paper's 31.9 M / 8.9 M, over neck widths,
and of every Table 4 row (LAM branch, SCEM on/off).

    python -m benchmarks.lagnet_params [--nc 6]

The paper does not give its neck/head width; its YOLOv5 anchor head with objectness is also
bigger than ultralytics' anchor-free Detect. The dual MobileNetV3 backbone alone is the part
that is comparable.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ultralytics.utils.torch_utils import get_num_params

from components.evaluate import model_gflops
from components.models.detect import DefectDetectionModel
from components.models.lagnet import DualMobileNetV3
from components.models.lagnet_yolo import PAPER_PARAMS_M, PAPER_TABLE4, TABLE4, VARIANTS, LagnetToggles, write_lagnet_yaml

from .common import cli, machine, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nc", type=int, default=6)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def build(variant, width, toggles=LagnetToggles()):
            cfg = write_lagnet_yaml(Path(tmp) / f"{variant}{width}", variant, width, 5, 2, a.nc, toggles)
            return DefectDetectionModel(str(cfg), nc=a.nc, verbose=False)

        for variant in ("large", "small"):
            backbone = get_num_params(DualMobileNetV3(variant, 64)) / 1e6
            for width in (64, 128, 256):
                m = build(variant, width)
                rows.append({"model": VARIANTS[variant], "width": width, "LAM": True, "SCEM": True,
                             "params (M)": round(get_num_params(m) / 1e6, 3),
                             "dual backbone + LGB (M, width 64)": round(backbone, 3),
                             "paper params (M)": PAPER_PARAMS_M[variant],
                             "GFLOPs@640": round(model_gflops(m, 640), 2), "GFLOPs@224": round(model_gflops(m, 224), 2)})
        for name, t in TABLE4.items():
            m = build("large", 64, t)
            rows.append({"model": f"Table 4 {name}", "width": 64, "LAM": t.lam, "SCEM": t.scem,
                         "params (M)": round(get_num_params(m) / 1e6, 3), "dual backbone + LGB (M, width 64)": "",
                         "paper params (M)": PAPER_TABLE4_PARAMS[name],
                         "GFLOPs@640": round(model_gflops(m, 640), 2), "GFLOPs@224": round(model_gflops(m, 224), 2)})
    payload = {"machine": machine(), "command": cli(), "nc": a.nc, "rows": rows, "paper_table4_mAP": PAPER_TABLE4}
    print(write("lagnet_params", payload, rows, ["model", "width", "LAM", "SCEM", "params (M)",
                                                  "dual backbone + LGB (M, width 64)", "paper params (M)",
                                                  "GFLOPs@640", "GFLOPs@224"],
                f"LAGNet parameters and GFLOPs (nc={a.nc}, SCEM k=5 n=2)"))


# lagnet.md Table 4, MobileNetV3 rows (params); the paper has no MobileNetV3 row without both
PAPER_TABLE4_PARAMS = {"baseline": "", "+LAM": 25.7, "+SCEM": 28.6, "+LAM+SCEM": 32.2}

if __name__ == "__main__":
    main()
