"""ONNX Runtime wrappers used by the stream: pre-process -> run -> post-process. Never imports torch."""

from models.runtime.base import ModelCard, OnnxModel, load_card

__all__ = ["ModelCard", "OnnxModel", "load_card"]
