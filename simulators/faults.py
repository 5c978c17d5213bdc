"""Fault injection with ground truth: dropouts and NSTDB noise added to real ECG.

Fault kinds and what :func:`inject` does to ``signal[start:end, lead]`` (physical units, mV):

- ``flatline``: held at the last value before the fault (a frozen amplifier/transmitter);
- ``zero``: set to 0 mV (a lead reading exactly zero);
- ``nan``: NaN (samples missing from the frame);
- ``lead_off``: electrode off -- a step of ``LEAD_OFF_STEP_MV`` (towards the side with headroom) away from
  the mean of the second before, then held there with a little 60 Hz hum (``LEAD_OFF_HUM_MV``) and noise,
  no ECG;
- ``saturation``: pinned at the ADC rail, on the side of the lead's mean: the lead's rail from
  ``adc_range_mv`` when given (the record's header, :attr:`stream.records.Record.adc_range_mv`), else
  ``RAIL_MV`` (MIT-BIH: 11-bit ADC at 200 adu/mV -> +5.115 mV / -5.12 mV);
- ``lost_frames``: not applied to the samples; the replay does not send frames whose span overlaps it
  (see :func:`frames_to_drop`);
- ``noise_bw`` / ``noise_ma``: additive baseline wander / muscle artefact from the MIT-BIH Noise Stress
  Test Database (``ECG_DATA_DIR/nstdb/bw``, ``ma``) scaled to ``snr_db``, where the SNR is the ratio of
  the lead's power to the noise power over the fault span (the NSTDB convention uses QRS amplitude instead;
  this is a power SNR). Noise is not a dropout: it stresses the detectors.

``lead=None`` applies a sample-level fault to every lead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from simulators.errors import DataError

FAULT_KINDS: tuple[str, ...] = (
    "flatline",
    "zero",
    "nan",
    "lead_off",
    "saturation",
    "lost_frames",
    "noise_bw",
    "noise_ma",
)
DROPOUT_FAULT_KINDS: tuple[str, ...] = (
    "flatline",
    "zero",
    "nan",
    "lead_off",
    "saturation",
    "lost_frames",
)
#: Which :data:`stream.stages.events.DROPOUT_KINDS` a detector should report for each injected fault.
EXPECTED_DROPOUT: dict[str, str] = {
    "flatline": "flatline",
    "zero": "flatline",
    "nan": "nan",
    "lead_off": "lead_off",
    "saturation": "saturation",
    "lost_frames": "missing_frames",
}
RAIL_MV = 5.115
LEAD_OFF_STEP_MV = 3.5
LEAD_OFF_HUM_MV = 0.01


@dataclass(frozen=True)
class FaultSpec:
    """One fault to inject: ``kind`` in :data:`FAULT_KINDS` on ``lead`` (None = all leads), seconds from
    the start of the signal."""

    kind: str
    lead: str | None
    start_s: float
    duration_s: float
    snr_db: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} not in {FAULT_KINDS}")
        if self.duration_s <= 0 or self.start_s < 0:
            raise ValueError(
                f"fault needs start_s >= 0 and duration_s > 0, got {self.start_s}, {self.duration_s}"
            )
        if self.kind.startswith("noise_") and self.snr_db is None:
            raise ValueError(f"{self.kind} needs snr_db")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class FaultEvent:
    """Ground truth of one injected fault, in stream time (seconds since the epoch)."""

    stream_id: str
    lead: str | None
    start: float
    end: float
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "lead": self.lead,
            "start": float(self.start),
            "end": float(self.end),
            "kind": self.kind,
        }


def load_nstdb_noise(data_dir: str | Path) -> dict[str, np.ndarray]:
    """NSTDB noise records ``{"bw": [n, 2], "ma": [n, 2]}`` (mV, 360 Hz) from ``data_dir/nstdb``."""
    out: dict[str, np.ndarray] = {}
    for name in ("bw", "ma"):
        path = Path(data_dir) / "nstdb" / name
        if not path.with_suffix(".hea").is_file():
            raise DataError(f"NSTDB noise record not found: {path}.hea (set ECG_DATA_DIR)")
        try:  # channel names are noise1/noise2, not leads: read with wfdb directly
            rec = wfdb.rdrecord(str(path))
        except Exception as exc:
            raise DataError(f"unreadable NSTDB record {path}: {exc}") from exc
        out[name] = np.asarray(rec.p_signal, dtype=np.float64)
    return out


def _lead_indices(leads: tuple[str, ...], lead: str | None) -> list[int]:
    if lead is None:
        return list(range(len(leads)))
    if lead not in leads:
        raise ValueError(f"fault lead {lead!r} not in {leads}")
    return [leads.index(lead)]


def inject(
    signal: np.ndarray,
    fs: float,
    leads: tuple[str, ...],
    faults: Sequence[FaultSpec],
    *,
    noise: dict[str, np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    adc_range_mv: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """A copy of ``signal [n, leads]`` (float32) with ``faults`` applied (``lost_frames`` excepted).

    ``adc_range_mv`` (``[[lo, hi], ...]`` per lead) gives the rails ``saturation`` pins the lead at.

    ``noise`` holds the NSTDB records (see :func:`load_nstdb_noise`), needed for ``noise_*`` faults, which
    must be at the noise records' rate (360 Hz). ``rng`` picks noise offsets and hum phases.
    """
    x = np.array(signal, dtype=np.float32, copy=True)
    if x.ndim != 2 or x.shape[1] != len(leads):
        raise ValueError(f"signal must be [n, {len(leads)}], got {x.shape}")
    rng = rng or np.random.default_rng(0)
    n = x.shape[0]
    for f in faults:
        s = round(f.start_s * fs)
        e = min(round(f.end_s * fs), n)
        if s >= n or e <= s:
            continue
        for li in _lead_indices(leads, f.lead):
            col = x[:, li]
            before = col[max(0, s - int(fs)) : s]
            before = before[np.isfinite(before)]
            ref = float(before.mean()) if before.size else 0.0
            if f.kind == "flatline":
                col[s:e] = col[s - 1] if s > 0 and np.isfinite(col[s - 1]) else ref
            elif f.kind == "zero":
                col[s:e] = 0.0
            elif f.kind == "nan":
                col[s:e] = np.nan
            elif f.kind == "lead_off":
                step = LEAD_OFF_STEP_MV if ref <= 0 else -LEAD_OFF_STEP_MV
                t = np.arange(e - s) / fs
                hum = LEAD_OFF_HUM_MV * np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 2 * np.pi))
                col[s:e] = ref + step + hum + rng.normal(0.0, 0.002, e - s)
            elif f.kind == "saturation":
                if adc_range_mv is not None:
                    lo, hi = (float(v) for v in adc_range_mv[li])
                    col[s:e] = hi if ref >= (lo + hi) / 2 else lo
                else:
                    col[s:e] = RAIL_MV if ref >= 0 else -RAIL_MV - 0.005
            elif f.kind in ("noise_bw", "noise_ma"):
                if noise is None:
                    raise ValueError(f"{f.kind} needs the NSTDB noise records (load_nstdb_noise)")
                src = noise[f.kind[6:]]
                if abs(fs - 360.0) > 1e-6:
                    raise ValueError(f"NSTDB noise is 360 Hz; signal is {fs} Hz")
                length = e - s
                if length > src.shape[0]:
                    raise ValueError("noise fault longer than the NSTDB record")
                off = int(rng.integers(0, src.shape[0] - length + 1))
                nz = src[off : off + length, li % src.shape[1]]
                nz = nz - nz.mean()
                seg = col[s:e]
                ok = np.isfinite(seg)
                p_sig = float(np.var(seg[ok])) if ok.any() else 0.0
                p_noise = float(np.var(nz)) or 1.0
                scale = np.sqrt(p_sig / (p_noise * 10 ** (float(f.snr_db or 0.0) / 10.0)))
                col[s:e] = seg + (scale * nz).astype(np.float32)
    return x


def random_faults(
    duration_s: float,
    leads: tuple[str, ...],
    rate_per_min: float,
    kinds: Sequence[str],
    rng: np.random.Generator,
    *,
    min_s: float = 0.2,
    max_s: float = 10.0,
    min_gap_s: float = 3.0,
    lead_start_s: float = 5.0,
    snr_db: tuple[float, float] = (0.0, 12.0),
) -> list[FaultSpec]:
    """Non-overlapping faults over ``duration_s``: kinds taken round-robin (shuffled) so every kind
    appears, durations log-uniform in ``[min_s, max_s]``, at least ``min_gap_s`` of clean signal between
    faults, none in the first ``lead_start_s`` (filter and detector warm-up)."""
    kinds = list(kinds)
    for k in kinds:
        if k not in FAULT_KINDS:
            raise ValueError(f"fault kind {k!r} not in {FAULT_KINDS}")
    if rate_per_min <= 0 or not kinds:
        return []
    mean_gap = 60.0 / rate_per_min
    order = list(rng.permutation(kinds))
    out: list[FaultSpec] = []
    t = lead_start_s + float(rng.uniform(0, min_gap_s))
    i = 0
    while True:
        dur = float(np.exp(rng.uniform(np.log(min_s), np.log(max_s))))
        if t + dur > duration_s - 1.0:
            break
        kind = str(order[i % len(order)])
        i += 1
        if i % len(order) == 0:
            order = list(rng.permutation(kinds))
        lead = None if kind == "lost_frames" else str(leads[int(rng.integers(len(leads)))])
        snr = float(rng.uniform(*snr_db)) if kind.startswith("noise_") else None
        out.append(FaultSpec(kind, lead, round(t, 3), round(dur, 3), snr))
        t += dur + max(min_gap_s, float(rng.exponential(mean_gap)))
    return out


def frames_to_drop(
    faults: Sequence[FaultSpec], n_samples: int, fs: float, frame_samples: int
) -> set[int]:
    """Sequence numbers of the frames (``frame_samples`` long, seq 0 at sample 0) overlapping a
    ``lost_frames`` fault."""
    drop: set[int] = set()
    for f in faults:
        if f.kind != "lost_frames":
            continue
        s = round(f.start_s * fs)
        e = min(round(f.end_s * fs), n_samples)
        if e > s:
            drop.update(range(s // frame_samples, (e - 1) // frame_samples + 1))
    return drop


def ground_truth(
    stream_id: str,
    faults: Sequence[FaultSpec],
    t0: float,
    fs: float,
    frame_samples: int,
    n_samples: int,
) -> list[FaultEvent]:
    """Ground-truth events in stream time ``t0 + seconds``; ``lost_frames`` spans the dropped frames."""
    out: list[FaultEvent] = []
    for f in faults:
        if f.kind == "lost_frames":
            seqs = sorted(frames_to_drop([f], n_samples, fs, frame_samples))
            if not seqs:
                continue
            start = t0 + seqs[0] * frame_samples / fs
            end = t0 + min((seqs[-1] + 1) * frame_samples, n_samples) / fs
            out.append(FaultEvent(stream_id, None, start, end, f.kind))
        else:
            end_s = min(f.end_s, n_samples / fs)
            out.append(FaultEvent(stream_id, f.lead, t0 + f.start_s, t0 + end_s, f.kind))
    return out
