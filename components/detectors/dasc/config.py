"""DASC-YOLO model configs: YOLO11 (any scale) with each DASC-YOLO module switchable, so every
row of the paper's ablation (Table 3) is one config.

Placement (documented choice; the paper names the stages, not layer indices):

* ``ResCBAM`` (or plain ``CBAM`` for the "+CBAM" row) after the backbone's P3 and P4 C3k2
  blocks (YOLO11 layers 4 and 6), the features the neck later concatenates;
* ``SCConv`` after the deepest backbone C3k2 (layer 8, P5, before SPPF): "deeper layers";
* ``CSA`` on each neck output (P3, P4, P5: YOLO11 layers 16, 19, 22);
* ``ProtoNet`` (K defect prototypes + 1 background) on each neck output, right before Detect.

The config is an ultralytics model dict (what a model YAML parses to), built from ultralytics'
own ``yolo11.yaml`` with the new layers inserted and every ``from`` index remapped. The model
registers the blocks (``layers.py``) with ultralytics' parser when it is built
(``components.models.blocks``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import ultralytics
import yaml
from ultralytics.utils.ops import make_divisible

YOLO11_YAML = Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml"
BACKBONE_ATTENTION_AT = (4, 6)
SCCONV_AT = (8,)
NECK_OUTPUTS = (16, 19, 22)
CSA_MODES = ("off", "weighted", "unweighted")
GATES = ("none", "zero")
CSA_CONTEXTS = ("global", "local")
CSA_LOCAL = 7                           # window of csa_context: local


@dataclass(frozen=True)
class DascToggles:
    """Which DASC-YOLO modules are on (params ``dasc``)."""

    rescbam: bool = True
    cbam: bool = False                 # plain CBAM instead of ResCBAM (Table 3 "+CBAM")
    csa: str = "weighted"              # off | weighted | unweighted ("w/o weighted fusion")
    scconv: bool = True
    protonet_k: int = 4                # defect prototypes; 0 = no ProtoNet
    gate: str = "none"                 # none = the paper's blocks; zero = zero-initialised residual gate
                                       # on every inserted block (the network starts as YOLO11)
    csa_context: str = "global"        # CSA global branch: global (1x1 pool, the paper) | local (7x7 window)
    proto_loss: float = 0.0            # gain of a ProtoNet mask loss supervised by the ground-truth boxes
                                       # (0 = unsupervised prototypes, the paper; components/models/loss.py)

    def __post_init__(self):
        if self.csa not in CSA_MODES:
            raise ValueError(f"dasc.csa must be one of {CSA_MODES}, got '{self.csa}'")
        if self.rescbam and self.cbam:
            raise ValueError("dasc: choose ResCBAM or CBAM, not both")
        if self.protonet_k < 0:
            raise ValueError("dasc.protonet_k must be >= 0")
        if self.gate not in GATES:
            raise ValueError(f"dasc.gate must be one of {GATES}, got '{self.gate}'")
        if self.csa_context not in CSA_CONTEXTS:
            raise ValueError(f"dasc.csa_context must be one of {CSA_CONTEXTS}, got '{self.csa_context}'")
        if self.proto_loss < 0:
            raise ValueError("dasc.proto_loss must be >= 0")
        if self.proto_loss and not self.protonet_k:
            raise ValueError("dasc.proto_loss needs a ProtoNet (dasc.protonet_k >= 1)")


# The paper's Table 3 rows, in its order.
TABLE3 = {
    "YOLO11": DascToggles(False, False, "off", False, 0),
    "+CBAM": DascToggles(False, True, "off", False, 0),
    "+ResCBAM": DascToggles(True, False, "off", False, 0),
    "+CSA w/o weighted fusion": DascToggles(False, False, "unweighted", False, 0),
    "+CSA": DascToggles(False, False, "weighted", False, 0),
    "+SCConv": DascToggles(False, False, "off", True, 0),
    "+ProtoNet K=2": DascToggles(False, False, "off", False, 2),
    "+ProtoNet K=4": DascToggles(False, False, "off", False, 4),
    "+ProtoNet K=8": DascToggles(False, False, "off", False, 8),
    "ResCBAM+CSA": DascToggles(True, False, "weighted", False, 0),
    "ResCBAM+CSA+SCConv": DascToggles(True, False, "weighted", True, 0),
    "DASC-YOLO (full)": DascToggles(True, False, "weighted", True, 4),
}


# dasc-yolo.md Table 3 (leather dataset, n scale): mAP, precision, recall, F1 (%), params (M), FPS
PAPER_TABLE3 = {row.strip(): tuple(float(v) for v in values.split())
                for row, values in (line.split("|") for line in """
leather, n scale         | mAP   P     R     F1     params FPS
YOLO11                   | 77.2  75.8  75.2  75.5   2.59  87.1
+CBAM                    | 78.3  76.2  73.5  74.8   2.59  80.8
+ResCBAM                 | 78.5  77.6  72.4  74.9   2.59  79.9
+CSA w/o weighted fusion | 77.9  76.7  73.5  75.1   2.68  83.9
+CSA                     | 78.4  76.7  74.3  75.5   2.68  83.5
+SCConv                  | 77.5  76.7  75.0  75.8   2.71  81.9
+ProtoNet K=2            | 77.3  76.6  75.2  75.9   2.84  80.5
+ProtoNet K=4            | 78.0  76.5  75.4  75.9   2.84  80.4
+ProtoNet K=8            | 77.1  75.4  74.9  75.1   2.84  79.7
ResCBAM+CSA              | 79.5  79.1  75.9  77.4   2.68  78.1
ResCBAM+CSA+SCConv       | 80.4  79.8  76.2  78.0   2.81  73.1
DASC-YOLO (full)         | 81.0  80.2  76.4  78.3   3.02  70.3
""".strip().splitlines()[1:])}


def _out_channels(layers: list, width: float, max_ch: int) -> list[int]:
    """Output channels of every YOLO11 layer at this scale (as ultralytics' parse_model)."""
    ch: list[int] = []
    for f, _, m, args in layers:
        if m in ("Conv", "C3k2", "SPPF", "C2PSA"):
            ch.append(make_divisible(min(args[0], max_ch) * width, 8))
        elif m == "Concat":
            ch.append(sum(ch[i] if i >= 0 else ch[len(ch) + i] for i in f))
        else:  # Upsample, Detect
            ch.append(ch[-1] if f == -1 else ch[f if isinstance(f, int) else f[0]])
    return ch


def dasc_yolo_cfg(scale: str, nc: int, toggles: DascToggles) -> dict:
    """An ultralytics model dict for YOLO11-``scale`` with the DASC-YOLO modules of ``toggles``."""
    base = yaml.safe_load(YOLO11_YAML.read_text())
    if scale not in base["scales"]:
        raise ValueError(f"scale must be one of {list(base['scales'])}, got '{scale}'")
    _, width, max_ch = base["scales"][scale]
    old = base["backbone"] + base["head"]
    ch = _out_channels(old, width, max_ch)

    gate = toggles.gate == "zero"
    after: dict[int, list[list]] = {i: [] for i in range(len(old))}
    if toggles.rescbam or toggles.cbam:
        for i in BACKBONE_ATTENTION_AT:
            after[i].append([-1, 1, "ResCBAM" if toggles.rescbam else "CBAM", [ch[i], 16, 7, gate]])
    if toggles.scconv:
        for i in SCCONV_AT:
            after[i].append([-1, 1, "SCConv", [ch[i], 16, 0.5, 0.5, 2, gate]])
    for i in NECK_OUTPUTS:
        if toggles.csa != "off":
            after[i].append([-1, 1, "CSA", [ch[i], 4, 1, toggles.csa == "weighted", gate,
                                              CSA_LOCAL if toggles.csa_context == "local" else 0]])
        if toggles.protonet_k:
            after[i].append([-1, 1, "ProtoNet", [ch[i], toggles.protonet_k, 4, 0.1, 0.1, gate]])

    new: list[list] = []
    where: dict[int, int] = {}          # old layer index -> new index of its (possibly refined) output
    n_backbone = 0
    for i, (f, n, m, args) in enumerate(old):
        if isinstance(f, list):
            f = [x if x < 0 else where[x] for x in f]
        elif f >= 0:
            f = where[f]
        new.append([f, n, m, copy.deepcopy(args)])
        new.extend(copy.deepcopy(after[i]))
        where[i] = len(new) - 1
        if i == len(base["backbone"]) - 1:
            n_backbone = len(new)
    cfg = {k: v for k, v in base.items() if k not in ("backbone", "head", "scales")}
    cfg.update(nc=nc, scale=scale, scales=base["scales"], backbone=new[:n_backbone],
               head=new[n_backbone:], dasc=asdict(toggles))
    return cfg


def write_dasc_yaml(folder: str | Path, scale: str, nc: int, toggles: DascToggles) -> Path:
    """Write the config as ``folder/dasc-yolo11<scale>.yaml``: ultralytics reads the scale from
    the file name when it loads a model YAML, so the name must carry it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dasc-yolo11{scale}.yaml"
    path.write_text(yaml.safe_dump(dasc_yolo_cfg(scale, nc, toggles), sort_keys=False))
    return path
