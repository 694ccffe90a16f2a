"""Self-supervised training (MoCo v3 style): network, augmentations, loss and trainer."""

from ie_engine.ssl.augment import TwoViewAugment, augment_view, eval_transform
from ie_engine.ssl.loss import contrastive_loss, symmetric_loss
from ie_engine.ssl.model import MoCoV3, build_backbone, load_backbone_checkpoint
from ie_engine.ssl.trainer import SSLTrainer, TrainStats, bare_train_throughput

__all__ = [
    "MoCoV3",
    "SSLTrainer",
    "TrainStats",
    "TwoViewAugment",
    "augment_view",
    "bare_train_throughput",
    "build_backbone",
    "contrastive_loss",
    "eval_transform",
    "load_backbone_checkpoint",
    "symmetric_loss",
]
