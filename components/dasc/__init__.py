"""DASC-YOLO (``../shared/papers/dasc-yolo.md``): everything but its layers.

- ``config``: YOLO11 with DASC-YOLO's modules inserted (the model YAML), its toggles and the
  paper's Table 3.

The layers (``ResCBAM``, ``SCConv``, ``CSA``, ``ProtoNet``...) stay in ``components/models/dasc.py``:
checkpoints pickle them by that module path, so moving them would make every trained DASC-YOLO
unloadable.
"""
