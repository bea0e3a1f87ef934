"""From trained weights to a model on the inspection line.

- ``export``: ONNX export (raw head, and end to end with NMS) with its parity checks;
- ``serving``: the end-to-end graph's consumer (letterbox, ONNX Runtime, boxes back in image
  pixels) and the MLflow pyfunc that ``mlflow models serve`` runs; numpy / OpenCV / ONNX Runtime
  only, shipped as the registered model's code;
- ``registry``: MLflow model versions, the promotion gate and the aliases;
- ``predict``: ``defectops predict`` on images and folders, from a file or the registry;
- ``server``: ``defectops serve``, the registered pyfunc behind a hardened HTTP edge (request size
  cap, the pixel limit before decoding, 4xx answers that never echo the request).
"""
