"""Network definitions (torch, training only), ONNX export, and ONNX Runtime wrappers (no torch)."""
