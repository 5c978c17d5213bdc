"""The one telemetry frame type: what :func:`stream.schemas.decode_frame` returns and what
:meth:`stream.stages.processor.StreamProcessor.process` consumes.

A plain frozen dataclass (no Kafka, no pydantic), so the stages never depend on the message schemas.
Times are float seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One frame of one stream: ``samples`` float32 ``[n_samples, n_leads]``, NaN for missing samples.

    The stages read ``stream_id`` .. ``samples``; the rest is what the telemetry message carried
    (``record``, ``units``, the gateway's ``sent_at``, the declared ``adc_range_mv`` and any unknown envelope
    fields in ``extra``) and stays at its default for frames built in code.
    """

    stream_id: str
    seq: int
    fs: float
    leads: tuple[str, ...]
    start_time: float
    samples: np.ndarray
    record: str = ""
    units: tuple[str, ...] = ()
    sent_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Declared ADC range per lead, ``((lo, hi), ...)`` in mV (the telemetry ``adc_range_mv``): the rails
    #: the dropout stage judges saturation against; None = estimated from the stream.
    adc_range_mv: tuple[tuple[float, float], ...] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_time(self) -> float:
        """Acquisition time just after the frame's last sample."""
        return self.start_time + self.n_samples / self.fs
