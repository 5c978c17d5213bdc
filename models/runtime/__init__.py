"""ONNX Runtime serving of the models (never imports torch).

A model card names its runtime class (:mod:`models.runtime.registry`); every scorer follows
:class:`~models.runtime.protocol.WindowModel` and every recoverer :class:`~models.runtime.protocol.Recoverer`.
This package's ``__init__`` imports nothing, so that :mod:`models.runtime.protocol` (the types the stream
uses) never loads onnxruntime; :func:`models.runtime.registry.load_model` does, on first use.
"""
