"""Export trained models to what the device runs (ONNX graphs + runtime manifest)."""

from edgeasr.export.onnx import export_model_dir, export_runtime_package

__all__ = ["export_model_dir", "export_runtime_package"]
