"""Detection models of the project: ultralytics' ``DetectionModel`` with a selectable box loss."""

from __future__ import annotations

from ultralytics.nn.tasks import DetectionModel, yaml_model_load

from .blocks import register_blocks
from .loss import DefectDetectionLoss


class DefectDetectionModel(DetectionModel):
    """A YOLO detection model (built from a YAML) whose box-regression loss is ``iou_loss``
    (one of ``components.models.iou.IOU_LOSSES``); everything else is ultralytics'. The loss
    travels with the model: given, it is written into the model's YAML dict (key ``iou_loss``,
    kept in every checkpoint); not given, it is read from there (default ``ciou``), so a trainer
    that rebuilds the model from ``model.yaml`` (ultralytics' ``get_model``) keeps it.

    A model YAML that states ``channels`` (LAGNet: 6 = RGB + LAM) keeps them, whatever ``ch``
    the caller (ultralytics' trainer passes the dataset's) asks for."""

    def __init__(self, cfg="yolo11n.yaml", ch: int = 3, nc: int | None = None, verbose: bool = True,
                 iou_loss: str | None = None):
        register_blocks()                                   # the detectors' own layers in the YAML
        cfg = cfg if isinstance(cfg, dict) else yaml_model_load(cfg)
        ch = cfg.get("channels", ch)
        super().__init__(cfg=cfg, ch=ch, nc=nc, verbose=verbose)
        self.iou_loss = iou_loss or self.yaml.get("iou_loss", "ciou")
        self.yaml["iou_loss"] = self.iou_loss

    def init_criterion(self):
        return DefectDetectionLoss(self, iou_loss=getattr(self, "iou_loss", "ciou"),
                                   proto_loss=float(self.yaml.get("dasc", {}).get("proto_loss", 0.0)))
