"""ecg-monitor streaming service: Faust pipeline, pure signal stages, metrics and CLI."""

__version__ = "0.1.0"
