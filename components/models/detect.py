"""Detection models of the project: ultralytics' ``DetectionModel`` with a selectable box loss."""

from __future__ import annotations

from ultralytics.nn.tasks import DetectionModel, yaml_model_load

from .blocks import register_blocks
from .loss import DefectDetectionLoss


class DefectDetectionModel(DetectionModel):
    """A YOLO detection model (built from a YAML) whose box-regression loss is ``iou_loss``
    (one of ``components.models.iou.IOU_LOSSES``); everything else is ultralytics'.

    A model YAML that states ``channels`` (LAGNet: 6 = RGB + LAM) keeps them, whatever ``ch``
    the caller (ultralytics' trainer passes the dataset's) asks for."""

    def __init__(self, cfg="yolo11n.yaml", ch: int = 3, nc: int | None = None, verbose: bool = True,
                 iou_loss: str = "ciou"):
        register_blocks()                                   # DASC-YOLO / LAGNet layers in the YAML
        cfg = cfg if isinstance(cfg, dict) else yaml_model_load(cfg)
        ch = cfg.get("channels", ch)
        super().__init__(cfg=cfg, ch=ch, nc=nc, verbose=verbose)
        self.iou_loss = iou_loss

    def init_criterion(self):
        return DefectDetectionLoss(self, iou_loss=getattr(self, "iou_loss", "ciou"))
