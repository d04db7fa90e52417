"""ONNX Runtime backend (optimum-onnx)."""
