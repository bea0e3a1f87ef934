"""LAGNet (``../shared/papers/lagnet.md``): everything but its layers.

- ``config``: the model YAML (dual MobileNetV3 + LGB, PAN with C3 and SCEM) and the paper's tables;
- ``lam``: the Location Activation Map (eq. (1)) from a trained detector's confidence;
- ``data``: the RGB + LAM data path (dataset, augmentation, trainer / validator mixins);
- ``export``: the one-graph model (baseline -> LAM -> LAGNet) and its ONNX export.

The layers (``LGB``, ``SCEM``, ``DualMobileNetV3``, ``LagPAN``...) stay in
``components/models/lagnet.py``: checkpoints pickle them by that module path, so moving them
would make every trained LAGNet unloadable.
"""
