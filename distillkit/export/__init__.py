"""Export: verified ONNX with metadata, INT8/FP16 quantization, TensorRT engines, pruning, the optimize report."""

from distillkit.export.optimize import Artefact, OptimizeOptions, OptimizeResult, optimize_model
from distillkit.export.quantize import RECIPES, QuantizationRecipe
from distillkit.model_metadata import ModelMetadata, check_single_input, read_onnx_metadata

__all__ = [
    "RECIPES",
    "Artefact",
    "ModelMetadata",
    "OptimizeOptions",
    "OptimizeResult",
    "QuantizationRecipe",
    "check_single_input",
    "optimize_model",
    "read_onnx_metadata",
]
