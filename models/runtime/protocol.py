"""The runtime contract every model serves the stream through.

- :class:`Window`: one model input cut from the causally filtered stream, as its card's
  :class:`~models.card.WindowSpec` declares it (NaN where samples are missing);
- :class:`WindowModel`: scores windows of its kind (``score(windows) -> list[ModelScore]``); it owns its
  preprocessing (normalisation, scoring rule, threshold), all read from its card;
- :class:`Recoverer`: fills the missing samples of windows of its kind before they are scored;
- :class:`ModelScore`: one model's verdict on one window, the one type from the runtime to the scores topic.

No torch, no stream imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.card import ModelCard, WindowSpec
from models.preprocessing.leads import TWELVE_LEADS
from models.preprocessing.rhythm import RRContext


@dataclass(frozen=True)
class Window:
    """Model input: ``kind`` is the window's name (its card's ``WindowSpec.name``, e.g. ``beat_720``);
    ``data`` is ``[samples]`` (beat, cycle) or ``[samples, leads]`` (leads) at ``fs``; ``start`` the stream
    time of its first sample; ``rr`` the beat's timing (beat windows); ``beat_time`` the stream time of the
    R peak a beat or cycle window is cut around (None for leads windows): it joins a beat's windows."""

    stream_id: str
    kind: str
    lead: str | None
    start: float
    fs: float
    data: np.ndarray
    rr: RRContext | None = None
    beat_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "kind": self.kind,
            "lead": self.lead,
            "start": float(self.start),
            "fs": float(self.fs),
            "shape": list(self.data.shape),
            "data": np.asarray(self.data, dtype=np.float32).tolist(),
        }


def stack_data(windows: Sequence[Window]) -> np.ndarray:
    """The windows' ``data`` as one float32 array ``[k, *shape]`` (filled in place: no per-window copies
    or dtype round trips); ValueError when their shapes differ, as ``np.stack``."""
    first = np.shape(windows[0].data)
    out = np.empty((len(windows), *first), dtype=np.float32)
    for i, w in enumerate(windows):
        if np.shape(w.data) != first:
            raise ValueError("all input arrays must have the same shape")
        out[i] = w.data
    return out


class ScoreFields(BaseModel):
    """What a score says about its window (the scores topic's per-window record; :class:`ModelScore`
    adds the stream).

    ``embedding``: the beat VAE's latent mean; ``lead_scores``: per-lead reconstruction error relative to
    normal training records (12-lead models); ``lead_attention`` and ``attention_peak`` (stream time, s, of
    the temporal attention maximum): attention models; ``recovered_by``/``recovered_fraction``: the
    recoverer that filled missing input before scoring, and the share of samples (beat) or leads (12-lead)
    it filled.
    """

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str = Field(description="Name of the scoring model (its card in models/artifacts).")
    window: str = Field(description="Kind of window scored: the name of the model card's window.")
    lead: str | None = Field(
        None, description="Lead of a single-lead window (the QRS lead); null for 12-lead windows."
    )
    time: float = Field(description="Epoch seconds (stream time) of the window's first sample.")
    score: float = Field(description="Anomaly score (higher = more anomalous).")
    threshold: float | None = Field(
        None, description="The model card's decision threshold on score."
    )
    anomalous: bool = Field(description="score above threshold.")
    embedding: list[float] | None = Field(
        None, description="beat_vae: the beat's latent mean; null for other models."
    )
    recovered_by: str | None = Field(
        None,
        description="Recoverer that filled missing input before scoring (lstm_ae for beat windows, "
        "lead_recon for 12-lead windows); null when the window was complete.",
    )
    recovered_fraction: float = Field(
        0.0,
        description="Share the recoverer filled: of the samples (beat window) or of the leads "
        "(12-lead window); 0 when complete.",
    )
    lead_scores: dict[str, float] | None = Field(
        None,
        description="12-lead models: each lead's reconstruction error relative to normal training "
        "records (which lead deviates), keyed by lead name.",
    )
    lead_attention: dict[str, float] | None = Field(
        None,
        description="Attention models (vae_bilstm_mha): lead-wise attention weights, keyed by lead name.",
    )
    attention_peak: float | None = Field(
        None,
        description="Attention models: epoch seconds (stream time) where the temporal attention peaks.",
    )


class ModelScore(ScoreFields):
    """One model's verdict on one window of one stream."""

    stream_id: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def per_lead(values: Sequence[float] | np.ndarray | None) -> dict[str, float] | None:
    """12 values in :data:`TWELVE_LEADS` order -> ``{lead: value}`` rounded to 5 decimals."""
    if values is None:
        return None
    return {lead: round(float(v), 5) for lead, v in zip(TWELVE_LEADS, values, strict=True)}


#: Provenance codes of recovered samples (:attr:`Recovered.provenance` holds indices into this tuple):
#: ``measured`` as recorded; ``model`` filled by a recovery network; ``derived`` computed exactly from
#: measured samples (Einthoven/Goldberger limb-lead identities); ``unrecoverable`` left missing (NaN).
PROVENANCE: tuple[str, ...] = ("measured", "model", "derived", "unrecoverable")
MEASURED, MODEL, DERIVED, UNRECOVERABLE = 0, 1, 2, 3


def amplitude_envelope(x: np.ndarray, fs: float, half_s: float, axis: int = 0) -> np.ndarray:
    """Local amplitude envelope of ``x`` along ``axis``: the moving maximum over +-``half_s`` seconds of
    ``|x - median(x)|`` (median per trace). The run-time difficulty scale of the recoverers' calibrated
    intervals (:mod:`models.runtime.lead_recon`, :mod:`models.runtime.lstm_ae`): errors grow where the
    rebuilt signal moves (QRS complexes), so intervals widen there and narrow on the baseline."""
    from scipy.ndimage import maximum_filter1d

    arr = np.asarray(x, dtype=np.float32)
    dev = np.abs(arr - np.median(arr, axis=axis, keepdims=True))
    size = 2 * max(round(half_s * fs), 0) + 1
    return maximum_filter1d(dev, size=size, axis=axis, mode="nearest").astype(np.float32)


@dataclass(frozen=True)
class Recovered:
    """A window whose missing samples were filled: the filled window, the recoverer and the share filled.

    ``provenance`` (uint8, same shape as ``window.data``): each sample's origin as an index into
    :data:`PROVENANCE`; ``half_width_90`` (float32 mV, same shape): half width of the calibrated 90 %
    interval around each sample (split-conformal on validation data, the card's ``uncertainty``; 0 where
    measured or derived exactly, NaN where unrecoverable). Both None from a recoverer that does not
    provide them (``half_width_90`` also None when the card holds no calibration).
    """

    window: Window
    by: str
    fraction: float
    provenance: np.ndarray | None = None
    half_width_90: np.ndarray | None = None


@runtime_checkable
class WindowModel(Protocol):
    """A scorer: the windows it takes (``window``) and ``score`` (its own preprocessing inside)."""

    card: ModelCard

    @property
    def name(self) -> str: ...

    @property
    def window(self) -> WindowSpec: ...

    def score(self, windows: Sequence[Window]) -> list[ModelScore]:
        """Scores of complete (finite) windows of this model's kind, in order."""
        ...


@runtime_checkable
class Recoverer(Protocol):
    """Fills missing (NaN) samples of windows of its kind."""

    card: ModelCard

    @property
    def name(self) -> str: ...

    @property
    def window(self) -> WindowSpec: ...

    def recover(
        self, windows: Sequence[Window]
    ) -> tuple[list[Recovered], list[tuple[Window, str]]]:
        """``(recovered, lost)``: filled windows, and those it cannot fill with the reason (``dropout`` or
        ``model_error: ...``)."""
        ...
