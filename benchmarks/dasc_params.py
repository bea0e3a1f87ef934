"""Parameters and GFLOPs of every DASC-YOLO Table 3 row (n scale) vs the paper, and of the full
model at every scale.

    python -m benchmarks.dasc_params [--nc 4]

The paper's leather dataset has 4 classes (black dot, white dot, colour streak, concat), so
the default ``--nc 4`` matches its Table 3 counts; NEU-DET has 6.
"""

from __future__ import annotations

import argparse

from ultralytics.utils.torch_utils import get_flops, get_num_params

from components.detectors.dasc.config import PAPER_TABLE3, TABLE3, dasc_yolo_cfg
from components.models.detect import DefectDetectionModel

from .common import cli, machine, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nc", type=int, default=4)
    a = ap.parse_args()
    rows = []
    for name, toggles in TABLE3.items():
        m = DefectDetectionModel(dasc_yolo_cfg("n", a.nc, toggles), nc=a.nc, verbose=False)
        p = get_num_params(m)
        paper = PAPER_TABLE3[name][4]
        rows.append({"row": name, "scale": "n", "params (M)": round(p / 1e6, 3), "paper params (M)": paper,
                     "diff %": round(100 * (p / 1e6 - paper) / paper, 1),
                     "GFLOPs@640": round(get_flops(m, 640), 2)})
    full = TABLE3["DASC-YOLO (full)"]
    for scale in ("s", "m", "l"):
        m = DefectDetectionModel(dasc_yolo_cfg(scale, a.nc, full), nc=a.nc, verbose=False)
        base = DefectDetectionModel(dasc_yolo_cfg(scale, a.nc, TABLE3["YOLO11"]), nc=a.nc, verbose=False)
        rows.append({"row": f"DASC-YOLO (full) vs YOLO11{scale} {get_num_params(base) / 1e6:.2f} M", "scale": scale,
                     "params (M)": round(get_num_params(m) / 1e6, 3), "paper params (M)": "",
                     "diff %": "", "GFLOPs@640": round(get_flops(m, 640), 2)})
    payload = {"machine": machine(), "command": cli(), "nc": a.nc, "rows": rows}
    print(write("dasc_params", payload, rows, ["row", "scale", "params (M)", "paper params (M)", "diff %",
                                                "GFLOPs@640"],
                f"DASC-YOLO parameter count per Table 3 row (nc={a.nc})"))


if __name__ == "__main__":
    main()
