"""Evaluation: COCO metrics exactly as pycocotools computes them, plus the extras people look at."""

from distillkit.evaluation.coco_metrics import EvaluationResult, IouTypeMetrics, evaluate_predictions
from distillkit.evaluation.predictions import load_predictions

__all__ = ["EvaluationResult", "IouTypeMetrics", "evaluate_predictions", "load_predictions"]
