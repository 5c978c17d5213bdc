"""Recovered segments: what the scoring stage put in place of masked samples, run by run and lead by lead.

The processor masks every dropout kind as NaN before windows are cut; the scoring stage hands windows
with NaN to their recoverer (``lead_recon`` for 12-lead windows, the LSTM-AE for 2 s beat windows), and
what a recoverer cannot fill is skipped with its reason. :func:`recovered_runs` turns one such window
into :class:`RecoveredRun` s, one per contiguous run of non-measured samples of one lead, with the
samples, their provenance (``model``, ``derived`` or ``unrecoverable``) and the calibrated half width of
the 90 % interval per sample. The pipeline publishes them on ``ecg.recovered.v1``. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.runtime.protocol import (
    DERIVED,
    MEASURED,
    MODEL,
    PROVENANCE,
    UNRECOVERABLE,
    Recovered,
    Window,
)

#: a window runs at most this many runs per lead into messages (a pathological mask is summarised)
MAX_RUNS_PER_LEAD = 16


@dataclass(frozen=True)
class RecoveredRun:
    """One contiguous run of one lead's samples that were not measured: filled or unrecoverable."""

    stream_id: str
    lead: str
    window: str
    window_start: float
    start: float
    end: float
    fs: float
    provenance: str
    recovered_by: str | None
    samples: np.ndarray | None
    half_width_90: np.ndarray | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "lead": self.lead,
            "window": self.window,
            "provenance": self.provenance,
            "start": self.start,
            "end": self.end,
            "n": None if self.samples is None else int(self.samples.size),
        }


def true_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in a 1-D bool array."""
    if not flags.any():
        return []
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _merge_close(runs: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """At most ``limit`` runs: the closest neighbours are merged (their gap is then part of the run)."""
    runs = list(runs)
    while len(runs) > limit:
        gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
        i = int(np.argmin(gaps))
        runs[i : i + 2] = [(runs[i][0], runs[i + 1][1])]
    return runs


def window_leads(window: Window, leads: Sequence[str]) -> tuple[str, ...]:
    """Lead names of a window's columns: its own lead (beat windows), its spec's leads, or the
    comma-joined names a ``leads_rebuild`` window carries."""
    if window.data.ndim == 1:
        return (window.lead or "?",)
    if not leads and window.lead and window.lead.count(",") == window.data.shape[1] - 1:
        return tuple(window.lead.split(","))  # leads_rebuild windows name their stream's leads
    return (
        tuple(leads)
        if len(leads) == window.data.shape[1]
        else tuple(f"lead{i}" for i in range(window.data.shape[1]))
    )


def recovered_runs(
    original: Window,
    leads: Sequence[str],
    recovered: Recovered | None = None,
    reason: str | None = None,
) -> list[RecoveredRun]:
    """The runs of ``original`` 's non-measured samples (NaN there) per lead: filled from ``recovered``
    (its ``provenance`` / ``half_width_90`` when the recoverer gives them, else every filled sample is
    ``model`` with no interval), or ``unrecoverable`` with ``reason`` when it was not recovered."""
    data = np.asarray(original.data)
    two_d = data.ndim == 2
    x = data if two_d else data[:, None]
    names = window_leads(original, leads)
    missing = ~np.isfinite(x)
    if not missing.any():
        return []
    prov: np.ndarray | None = None
    filled: np.ndarray | None = None
    width: np.ndarray | None = None
    if recovered is not None:
        filled = np.asarray(recovered.window.data, dtype=np.float64)
        filled = filled if two_d else filled[:, None]
        p = recovered.provenance
        prov = (
            np.asarray(p, dtype=np.uint8).reshape(x.shape)
            if p is not None
            else np.where(missing, MODEL, MEASURED).astype(np.uint8)
        )
        w = recovered.half_width_90
        width = None if w is None else np.asarray(w, dtype=np.float64).reshape(x.shape)
    out: list[RecoveredRun] = []
    for j, lead in enumerate(names):
        col_missing = missing[:, j]
        if not col_missing.any():
            continue
        if prov is None:
            codes = np.where(col_missing, UNRECOVERABLE, MEASURED)
        else:
            codes = np.where(col_missing, prov[:, j], MEASURED)
            codes = np.where(col_missing & (codes == MEASURED), UNRECOVERABLE, codes)
        for code in (MODEL, DERIVED, UNRECOVERABLE):
            for a, b in _merge_close(true_runs(codes == code), MAX_RUNS_PER_LEAD):
                unrec = code == UNRECOVERABLE
                samples = None if unrec or filled is None else filled[a:b, j].astype(np.float32)
                hw: np.ndarray | None = None
                if not unrec:
                    hw = (
                        np.zeros(b - a, dtype=np.float32)
                        if code == DERIVED
                        else (None if width is None else width[a:b, j].astype(np.float32))
                    )
                out.append(
                    RecoveredRun(
                        stream_id=original.stream_id,
                        lead=lead,
                        window=original.kind,
                        window_start=float(original.start),
                        start=float(original.start + a / original.fs),
                        end=float(original.start + b / original.fs),
                        fs=float(original.fs),
                        provenance=PROVENANCE[code],
                        recovered_by=None if unrec or recovered is None else recovered.by,
                        samples=samples,
                        half_width_90=hw,
                        reason=(reason or "not recovered") if unrec else None,
                    )
                )
    out.sort(key=lambda r: (r.lead, r.start))
    return out
