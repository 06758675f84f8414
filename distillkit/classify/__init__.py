"""Image-level classification: timm backbones (+ CBAM), data sources, losses, metrics, training, inference.

The checkpoint contract other packages rely on (the ONNX exporter, evaluate/infer dispatch)::

    from distillkit.classify import is_classifier_checkpoint, load_classifier
    loaded = load_classifier("exp/cls/best.pt")      # .model (eval, logits), .class_names, .multi_label,
                                                     # .imgsz, .mean, .std, .threshold
"""

from distillkit.classify.checkpoint import (
    ClassifierMeta,
    LoadedClassifier,
    is_classifier_checkpoint,
    load_classifier,
    save_classifier,
)
from distillkit.classify.models import ClassifierSpec, TimmClassifier, build_classifier, list_models

__all__ = [
    "ClassifierMeta",
    "ClassifierSpec",
    "LoadedClassifier",
    "TimmClassifier",
    "build_classifier",
    "is_classifier_checkpoint",
    "list_models",
    "load_classifier",
    "save_classifier",
]
