"""Noise stress test records in the manner of ANSI/AAMI EC57 and PhysioNet's ``nst``, made by the project.

:func:`nst_record` builds, deterministically from a ``seed``, an NST record from a clean MIT-BIH record:

- protocol (``nst``'s standard one): the first ``learning_s`` (5 min) clean, then 2-minute noisy and
  2-minute clean segments alternately to the end of the record; noise is added on every lead, lead ``i``
  taking channel ``i % 2`` of the NSTDB noise record (``bw`` baseline wander, ``ma`` muscle artefact; the
  ``em`` electrode-motion record is used when it is present under ``ECG_DATA_DIR/nstdb``), read from a
  start offset drawn from ``seed`` and wrapped around at its end;
- SNR, the NST convention (``nst`` and ``sigamp`` of the WFDB software; MIT-BIH NSTDB description):
  ``SNR = 10 log10(S / N)`` dB with ``S = A**2 / 8``, ``A`` the peak-to-peak amplitude of the QRS complexes
  (``max - min`` within +-50 ms of each normal-beat annotation: N, L, R, e, j; all beats when a record has
  none), and ``N = R**2``, ``R`` the RMS amplitude of the noise measured in consecutive 1 s windows, each
  about its own mean. ``A`` and ``R`` are trimmed means (the largest and smallest 5 % of the measurements
  dropped). ``nst`` itself measures ``A`` on the first 300 normal beats and ``R`` on the first 300 s of the
  noise record; here ``A`` is measured on every normal beat of the generated span and ``R`` on the noise
  actually added (all noisy segments together, as added), so the stated SNR is exactly the SNR of the
  noisy segments. One gain per lead for the whole record (as ``nst``);
- segment edges: ``nst`` keeps the output continuous at each gain change with an offset that carries the
  noise level of a segment's end into the following clean segment (a DC shift that accumulates along the
  record); here each noisy segment is zero-mean and its gain ramps in and out over ``ramp_s`` (1 s raised
  cosine) instead, and DC offsets are a separate, explicit option;
- DC offsets: a constant ``offset_mv`` per lead (up to +-:data:`MAX_OFFSET_MV`), plus
  :class:`OffsetStep` baseline steps (a slow, raised-cosine ramp of ``ramp_s`` to a new level); the total
  offset stays within +-:data:`MAX_OFFSET_MV`.

:func:`write_nst_record` writes it as WFDB: format 16 at :data:`ADC_GAIN` adu/mV (MIT-BIH's resolution,
5 uV), ADC zero and baseline 0, 16-bit: the header's ADC range is +-163.8 mV
(:func:`stream.records.adc_range`), so offsets and noise are far inside it -- a DC offset is not
saturation (the gain is lowered, by powers of two, only if a signal would not fit). The reference ``.atr``
annotations are copied beside it (``wfdb.wrann``), with a ``pro`` protocol annotation file as ``nst`` writes
(a NOTE at each gain change, the gains in its aux field) and the metadata as header comments.

References: Moody GB, Muldrow WK, Mark RG, "A noise stress test for arrhythmia detectors", Computers in
Cardiology 1984; ANSI/AAMI EC57; the MIT-BIH Noise Stress Test Database on PhysioNet (Goldberger et al. 2000).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from simulators.errors import DataError
from stream.records import Record, adc_range, read_annotations, read_record

#: Noise kinds of the NSTDB (``em`` is used only where its record is present).
NST_NOISE_KINDS: tuple[str, ...] = ("bw", "ma", "em")
#: The SNRs of the NSTDB records (dB).
NST_SNRS_DB: tuple[float, ...] = (24.0, 18.0, 12.0, 6.0, 0.0, -6.0)
#: The MIT-BIH records of the NSTDB (and of EC57's noise stress test).
NST_RECORDS: tuple[str, ...] = ("118", "119")
LEARNING_S = 300.0
SEGMENT_S = 120.0
RAMP_S = 1.0
MAX_OFFSET_MV = 10.0
#: adu per mV of the written records (MIT-BIH's 200 adu/mV: 5 uV resolution)
ADC_GAIN = 200.0
ADC_BITS = 16
#: beat symbols sigamp counts as normal QRS complexes (``map1(anntyp) == NORMAL``)
NORMAL_SYMBOLS: tuple[str, ...] = ("N", "L", "R", "e", "j")
QRS_HALF_WINDOW_S = 0.05
TRIM = 0.05


@dataclass(frozen=True)
class OffsetStep:
    """A baseline step: from ``start_s`` the offset of ``lead`` (None: every lead) moves by ``delta_mv``,
    along a raised-cosine ramp of ``ramp_s`` seconds."""

    start_s: float
    delta_mv: float
    lead: str | None = None
    ramp_s: float = 2.0

    def __post_init__(self) -> None:
        if self.start_s < 0 or self.ramp_s < 0:
            raise ValueError(f"offset step needs start_s >= 0 and ramp_s >= 0, got {self}")


@dataclass(frozen=True)
class NstRecord:
    """A generated NST record: ``signal`` float32 ``[n, leads]`` (mV) = clean + noise + ``offset_mv``
    track; ``noise_spans`` the noisy segments ``(start_s, end_s)`` (ramps included); ``gains`` the noise
    gain per lead (noise record units -> mV); ``qrs_amplitude_mv`` ``A`` and ``noise_rms_mv`` ``R`` (after
    the gain) per lead, from which ``snr_db`` follows (NST convention, module docstring)."""

    name: str
    source: str
    fs: float
    leads: tuple[str, ...]
    signal: np.ndarray
    offset_track_mv: np.ndarray
    noise: str | None
    snr_db: float | None
    seed: int
    noise_start: int
    noise_spans: tuple[tuple[float, float], ...]
    gains: tuple[float, ...]
    qrs_amplitude_mv: tuple[float, ...]
    noise_rms_mv: tuple[float, ...]
    offset_mv: tuple[float, ...]
    offset_steps: tuple[OffsetStep, ...]
    units: tuple[str, ...]
    adc_gain: float
    annotation_sample: np.ndarray = field(repr=False)
    annotation_symbol: np.ndarray = field(repr=False)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[0] / self.fs

    @property
    def adc_range_mv(self) -> tuple[tuple[float, float], ...]:
        """The ADC range its header declares (:func:`stream.records.adc_range` of the written header)."""
        return adc_range_of(len(self.leads), self.adc_gain) or ()

    def record(self) -> Record:
        """As a :class:`stream.records.Record` (what :func:`stream.records.read_record` reads back)."""
        return Record(
            name=self.name,
            fs=self.fs,
            leads=self.leads,
            signal=self.signal,
            units=self.units,
            adc_range_mv=self.adc_range_mv,
        )

    def noisy_mask(self) -> np.ndarray:
        """True for the samples inside a noisy segment."""
        mask = np.zeros(self.signal.shape[0], dtype=bool)
        for a, b in self.noise_spans:
            mask[round(a * self.fs) : round(b * self.fs)] = True
        return mask

    def metadata(self) -> dict[str, Any]:
        """JSON-able description (what the header comments carry)."""
        return {
            "name": self.name,
            "source": self.source,
            "fs": self.fs,
            "leads": list(self.leads),
            "duration_s": round(self.duration_s, 3),
            "noise": self.noise,
            "snr_db": self.snr_db,
            "snr_convention": "NST: 10 log10((A^2/8) / R^2), A = trimmed-mean QRS peak-to-peak, "
            "R = trimmed-mean 1 s RMS of the added noise",
            "seed": self.seed,
            "noise_start_sample": self.noise_start,
            "noise_spans_s": [[round(a, 3), round(b, 3)] for a, b in self.noise_spans],
            "gains": [round(g, 6) for g in self.gains],
            "qrs_amplitude_mv": [round(a, 4) for a in self.qrs_amplitude_mv],
            "noise_rms_mv": [round(r, 5) for r in self.noise_rms_mv],
            "offset_mv": list(self.offset_mv),
            "offset_steps": [
                {"start_s": s.start_s, "delta_mv": s.delta_mv, "lead": s.lead, "ramp_s": s.ramp_s}
                for s in self.offset_steps
            ],
            "offset_range_mv": [
                [round(float(lo), 4), round(float(hi), 4)]
                for lo, hi in zip(
                    self.offset_track_mv.min(axis=0).tolist(),
                    self.offset_track_mv.max(axis=0).tolist(),
                    strict=True,
                )
            ],
            "adc_gain": self.adc_gain,
            "adc_range_mv": [list(r) for r in self.adc_range_mv],
        }


# ------------------------------------------------------------------------------------------ measures
def _trimmed_mean(values: np.ndarray) -> float:
    """Mean of ``values`` without the largest and smallest 5 % (``sigamp``'s ``namp / 20`` each side)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return 0.0
    lo = v.size // 20
    return float(v[lo : v.size - lo].mean())


def qrs_amplitude(
    x: np.ndarray, fs: float, beats: np.ndarray, half_window_s: float = QRS_HALF_WINDOW_S
) -> float:
    """``A``: trimmed mean of the peak-to-peak amplitude within +-``half_window_s`` of each beat (sigamp -a)."""
    w = max(1, round(half_window_s * fs))
    beats = np.asarray(beats, dtype=np.int64)
    beats = beats[(beats - w >= 0) & (beats + w < x.shape[0])]
    if beats.size == 0:
        return 0.0
    idx = beats[:, None] + np.arange(-w, w + 1)[None, :]
    seg = x[idx]
    ok = np.all(np.isfinite(seg), axis=1)
    if not ok.any():
        return 0.0
    return _trimmed_mean(np.ptp(seg[ok], axis=1))


def noise_rms(noise: np.ndarray, fs: float, window_s: float = 1.0) -> float:
    """``R``: trimmed mean of the RMS about the mean of consecutive ``window_s`` windows (sigamp -w 1)."""
    w = max(1, round(window_s * fs))
    n = noise.shape[0] // w * w
    if n == 0:
        return 0.0
    win = np.asarray(noise[:n], dtype=np.float64).reshape(-1, w)
    rms = np.sqrt(np.mean((win - win.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return _trimmed_mean(rms)


def nst_snr_db(qrs_amplitude_mv: float, noise_rms_mv: float) -> float:
    """SNR (dB) of the NST convention: ``10 log10((A**2 / 8) / R**2)``."""
    if noise_rms_mv <= 0:
        return float("inf")
    return float(10.0 * np.log10((qrs_amplitude_mv**2 / 8.0) / noise_rms_mv**2))


def measure_snr_db(
    noisy: np.ndarray,
    clean: np.ndarray,
    fs: float,
    beats: np.ndarray,
    mask: np.ndarray,
) -> float:
    """SNR (NST convention) of a lead: ``A`` of ``clean`` at ``beats``, ``R`` of ``noisy - clean`` over the
    samples of ``mask`` (joined), so it measures a generated record against its source."""
    return nst_snr_db(
        qrs_amplitude(np.asarray(clean, dtype=np.float64), fs, beats),
        noise_rms((np.asarray(noisy, dtype=np.float64) - clean)[mask], fs),
    )


# ------------------------------------------------------------------------------------------ building
def nst_spans(
    duration_s: float,
    learning_s: float = LEARNING_S,
    segment_s: float = SEGMENT_S,
) -> list[tuple[float, float]]:
    """Noisy segments of the NST protocol over ``duration_s``: after ``learning_s`` clean, ``segment_s`` noisy
    and ``segment_s`` clean alternately; the last noisy segment is cut at the end."""
    out = []
    t = learning_s
    while t < duration_s:
        out.append((t, min(t + segment_s, duration_s)))
        t += 2 * segment_s
    return out


def load_noise(data_dir: str | Path, kind: str) -> np.ndarray:
    """The NSTDB noise record ``kind`` (``bw``, ``ma``, ``em``) as float64 ``[n, 2]`` mV at 360 Hz."""
    if kind not in NST_NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NST_NOISE_KINDS}, not {kind!r}")
    path = Path(data_dir) / "nstdb" / kind
    if not path.with_suffix(".hea").is_file():
        hint = (
            " (the em record is not in every copy of the NSTDB)"
            if kind == "em"
            else " (run `python -m training data download --db nstdb`)"
        )
        raise DataError(f"NSTDB noise record not found: {path}.hea{hint}")
    try:  # channels are noise1/noise2, not leads: read with wfdb directly
        rec = wfdb.rdrecord(str(path))
    except Exception as exc:
        raise DataError(f"unreadable NSTDB record {path}: {exc}") from exc
    return np.asarray(rec.p_signal, dtype=np.float64)


def available_noise_kinds(data_dir: str | Path) -> list[str]:
    """The NSTDB noise kinds whose record is present under ``data_dir/nstdb``."""
    return [k for k in NST_NOISE_KINDS if (Path(data_dir) / "nstdb" / f"{k}.hea").is_file()]


def nst_name(record: str, noise: str | None, snr_db: float | None, offset_mv: float = 0.0) -> str:
    """Default record name, NSTDB style: ``119ma00``, ``118bw_6`` (``_`` for minus), ``119clean``; a
    constant offset adds ``_op5`` / ``_om10`` (plus / minus, mV)."""
    base = Path(record).name
    if noise is None or snr_db is None:
        name = f"{base}clean"
    else:
        s = round(snr_db)
        name = f"{base}{noise}{s:02d}" if s >= 0 else f"{base}{noise}_{-s}"
    if offset_mv:
        sign = "p" if offset_mv > 0 else "m"
        name += f"_o{sign}{abs(offset_mv):g}".replace(".", "d")
    return name


def _per_lead(value: float | Sequence[float], n: int, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * n
    out = tuple(float(v) for v in value)
    if len(out) != n:
        raise ValueError(f"{what} needs 1 or {n} values (one per lead), got {len(out)}")
    return out


def offset_track(
    n: int,
    fs: float,
    leads: tuple[str, ...],
    offset_mv: float | Sequence[float] = 0.0,
    steps: Sequence[OffsetStep] = (),
) -> np.ndarray:
    """The DC offset ``[n, leads]`` (float64, mV): constant ``offset_mv`` plus the ``steps``; raises
    ValueError when it leaves +-:data:`MAX_OFFSET_MV`."""
    base = _per_lead(offset_mv, len(leads), "offset_mv")
    track = np.tile(np.asarray(base, dtype=np.float64), (n, 1))
    t = np.arange(n) / fs
    for st in steps:
        if st.lead is not None and st.lead not in leads:
            raise ValueError(f"offset step lead {st.lead!r} not in {leads}")
        if st.ramp_s > 0:
            u = np.clip((t - st.start_s) / st.ramp_s, 0.0, 1.0)
            shape = 0.5 - 0.5 * np.cos(np.pi * u)
        else:
            shape = (t >= st.start_s).astype(np.float64)
        cols = range(len(leads)) if st.lead is None else [leads.index(st.lead)]
        for c in cols:
            track[:, c] += st.delta_mv * shape
    if track.size and float(np.max(np.abs(track))) > MAX_OFFSET_MV + 1e-9:
        raise ValueError(
            f"DC offset reaches {float(np.max(np.abs(track))):g} mV; keep it within +-{MAX_OFFSET_MV:g} mV"
        )
    return track


def _ramp(length: int, ramp: int) -> np.ndarray:
    """Gain envelope of a noisy segment: raised-cosine in and out over ``ramp`` samples, 1 between."""
    env = np.ones(length, dtype=np.float64)
    r = min(ramp, length // 2)
    if r > 0:
        up = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
        env[:r] = up
        env[length - r :] = up[::-1]
    return env


def nst_record(
    data_dir: str | Path,
    record: str,
    noise: str | None = "ma",
    snr_db: float | None = 0.0,
    *,
    seed: int = 0,
    seconds: float | None = None,
    offset_mv: float | Sequence[float] = 0.0,
    offset_steps: Sequence[OffsetStep] = (),
    noise_records: Mapping[str, np.ndarray] | None = None,
    learning_s: float = LEARNING_S,
    segment_s: float = SEGMENT_S,
    ramp_s: float = RAMP_S,
    name: str | None = None,
) -> NstRecord:
    """An NST record from MIT-BIH ``record`` (``"119"`` or ``"mitdb/119"``; its first ``seconds`` when
    given): ``noise`` (``bw``/``ma``/``em``; None: no noise) at ``snr_db`` on every lead in the NST protocol's
    noisy segments, plus the DC offsets; deterministic for ``seed`` (which picks the noise start).

    ``noise_records`` may hold the noise records already read (:func:`load_noise`), keyed by kind.
    """
    data_dir = Path(data_dir)
    rec_path = Path(record)
    if len(rec_path.parts) == 1:
        rec_path = Path("mitdb") / rec_path
    path = data_dir / rec_path
    fs_hint = 360.0
    sampto = round(seconds * fs_hint) if seconds is not None else None
    rec = read_record(path, sampto=sampto)
    if seconds is not None and abs(rec.fs - fs_hint) > 1e-6:  # re-read at the record's own rate
        rec = read_record(path, sampto=round(seconds * rec.fs))
    ann = read_annotations(path)
    n, n_leads = rec.signal.shape
    keep = ann.sample < n
    ann_sample, ann_symbol = ann.sample[keep], ann.symbol[keep]
    clean = np.nan_to_num(rec.signal.astype(np.float64))
    track = offset_track(n, rec.fs, rec.leads, offset_mv, offset_steps)
    x = clean + track
    spans: list[tuple[float, float]] = []
    gains: list[float] = []
    amps: list[float] = []
    rmss: list[float] = []
    noise_start = 0
    if noise is not None:
        if snr_db is None:
            raise ValueError("noise needs snr_db")
        src = (noise_records or {}).get(noise)
        if src is None:
            src = load_noise(data_dir, noise)
        if abs(rec.fs - 360.0) > 1e-6:
            raise ValueError(f"NSTDB noise is 360 Hz; record {record} is {rec.fs:g} Hz")
        rng = np.random.default_rng(seed)
        noise_start = int(rng.integers(0, src.shape[0]))
        spans = nst_spans(rec.duration_s, learning_s, segment_s)
        # the noise as added, before the gain: zero-mean segments with their ramps, one column per lead
        added = np.zeros((n, n_leads), dtype=np.float64)
        ramp = round(ramp_s * rec.fs)
        for a_s, b_s in spans:
            a, b = round(a_s * rec.fs), min(round(b_s * rec.fs), n)
            if b <= a:
                continue
            idx = (noise_start + np.arange(a, b)) % src.shape[0]
            env = _ramp(b - a, ramp)
            for li in range(n_leads):
                seg = src[idx, li % src.shape[1]]
                added[a:b, li] = (seg - seg.mean()) * env
        mask = np.zeros(n, dtype=bool)
        for a_s, b_s in spans:
            mask[round(a_s * rec.fs) : round(b_s * rec.fs)] = True
        sym = np.asarray(ann_symbol)
        normal = ann_sample[np.isin(sym, NORMAL_SYMBOLS)]
        if normal.size == 0:
            from stream.records import BEAT_SYMBOLS

            normal = ann_sample[np.isin(sym, list(BEAT_SYMBOLS))]
        for li in range(n_leads):
            amp = qrs_amplitude(clean[:, li], rec.fs, normal)
            unit_rms = noise_rms(added[mask, li], rec.fs) if mask.any() else 0.0
            # nst: RMS noise / p-p signal = 10**(-snr/20) * sqrt(2) / 4
            target_rms = amp * 10 ** (-float(snr_db) / 20.0) * np.sqrt(2.0) / 4.0
            g = target_rms / unit_rms if unit_rms > 0 else 0.0
            x[:, li] += g * added[:, li]
            gains.append(float(g))
            amps.append(float(amp))
            rmss.append(float(g * unit_rms))
    base_offsets = _per_lead(offset_mv, n_leads, "offset_mv")
    rec_name = name or nst_name(
        rec_path.name, noise, snr_db, base_offsets[0] if len(set(base_offsets)) == 1 else 0.0
    )
    sig = x.astype(np.float32)
    return NstRecord(
        name=rec_name,
        source=str(rec_path),
        fs=rec.fs,
        leads=rec.leads,
        signal=sig,
        offset_track_mv=track.astype(np.float32),
        noise=noise,
        snr_db=None if noise is None else float(snr_db or 0.0),
        seed=seed,
        noise_start=noise_start,
        noise_spans=tuple((float(a), float(b)) for a, b in spans),
        gains=tuple(gains),
        qrs_amplitude_mv=tuple(amps),
        noise_rms_mv=tuple(rmss),
        offset_mv=base_offsets,
        offset_steps=tuple(offset_steps),
        units=rec.units or ("mV",) * n_leads,
        adc_gain=_fitting_gain(sig),
        annotation_sample=ann_sample,
        annotation_symbol=ann_symbol,
    )


def _fitting_gain(x: np.ndarray) -> float:
    """:data:`ADC_GAIN`, halved until every finite sample fits the 16-bit range with a 1 % margin."""
    peak = float(np.nanmax(np.abs(x))) if x.size else 0.0
    gain = ADC_GAIN
    limit = (2 ** (ADC_BITS - 1) - 1) * 0.99
    while peak * gain > limit and gain > 1e-3:
        gain /= 2.0
    return gain


class _Header:
    """The fields of a WFDB header :func:`stream.records.adc_range` reads."""

    def __init__(self, n: int, gain: float) -> None:
        self.sig_name = [f"s{i}" for i in range(n)]
        self.adc_gain = [gain] * n
        self.adc_res = [ADC_BITS] * n
        self.fmt = ["16"] * n
        self.adc_zero = [0] * n
        self.baseline = [0] * n


def adc_range_of(n_leads: int, gain: float = ADC_GAIN) -> tuple[tuple[float, float], ...] | None:
    """The ADC range of a written NST record's header (format 16, ``gain`` adu/mV, zero and baseline 0)."""
    return adc_range(_Header(n_leads, gain))


# ------------------------------------------------------------------------------------------- writing
def write_nst_record(nst: NstRecord, out_dir: str | Path, data_dir: str | Path) -> Path:
    """Write ``nst`` as WFDB record ``out_dir/<name>`` (``.hea``, ``.dat`` format 16, ``.atr`` copied from
    the source record in ``data_dir``, ``.pro`` protocol NOTEs); returns the record path (no extension)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_leads = len(nst.leads)
    d = np.rint(np.nan_to_num(nst.signal.astype(np.float64)) * nst.adc_gain)
    d = np.clip(d, -(2 ** (ADC_BITS - 1)) + 1, 2 ** (ADC_BITS - 1) - 1).astype(np.int16)
    meta = nst.metadata()
    comments = [
        f"nst: source {nst.source}, noise {nst.noise or 'none'}"
        + (f" at {nst.snr_db:g} dB SNR (NST convention)" if nst.snr_db is not None else "")
        + f", seed {nst.seed}, noise start sample {nst.noise_start}",
        "nst: noisy segments (s) "
        + (" ".join(f"{a:g}-{b:g}" for a, b in nst.noise_spans) or "none"),
        "nst: gains " + " ".join(f"{g:.6g}" for g in nst.gains) if nst.gains else "nst: gains none",
        "nst: dc offset (mV) "
        + " ".join(f"{v:g}" for v in nst.offset_mv)
        + f", steps {meta['offset_steps']}, offset range {meta['offset_range_mv']}",
        f"nst: adc gain {nst.adc_gain:g} adu/mV, 16-bit, range {meta['adc_range_mv']} mV",
    ]
    try:
        wfdb.wrsamp(
            nst.name,
            fs=nst.fs,
            units=list(nst.units),
            sig_name=list(_source_sig_names(nst, data_dir)),
            d_signal=d,
            fmt=["16"] * n_leads,
            adc_gain=[nst.adc_gain] * n_leads,
            baseline=[0] * n_leads,
            comments=comments,
            write_dir=str(out_dir),
        )
        _copy_annotations(nst, out_dir, data_dir)
        if nst.noise_spans:
            times, notes = [], []
            for a, b in nst.noise_spans:
                times += [round(a * nst.fs), round(b * nst.fs)]
                notes += [" ".join(f"{g:.6g}" for g in nst.gains), " ".join("0" for _ in nst.gains)]
            wfdb.wrann(
                nst.name,
                "pro",
                np.asarray(times, dtype=np.int64),
                symbol=['"'] * len(times),
                aux_note=notes,
                fs=nst.fs,
                write_dir=str(out_dir),
            )
    except OSError as exc:
        raise DataError(f"cannot write NST record {out_dir / nst.name}: {exc}") from exc
    return out_dir / nst.name


def _source_sig_names(nst: NstRecord, data_dir: str | Path) -> list[str]:
    """The source record's own signal names (``MLII``, ``V1``...), else the canonical lead names."""
    try:
        hdr = wfdb.rdheader(str(Path(data_dir) / nst.source))
        if hdr.sig_name and len(hdr.sig_name) == len(nst.leads):
            return list(hdr.sig_name)
    except Exception:
        pass
    return list(nst.leads)


def _copy_annotations(nst: NstRecord, out_dir: Path, data_dir: str | Path) -> None:
    """The source record's reference annotations (every type, with subtypes, channels and aux notes),
    cut to the generated span, written as ``<name>.atr``."""
    src = Path(data_dir) / nst.source
    try:
        ann = wfdb.rdann(str(src), "atr")
    except Exception as exc:
        raise DataError(f"cannot read the reference annotations {src}.atr: {exc}") from exc
    keep = np.asarray(ann.sample) < nst.signal.shape[0]
    if not keep.any():
        return
    sample = np.asarray(ann.sample)[keep]

    def cut(values: Any) -> Any:
        return None if values is None else np.asarray(values)[keep]

    aux = (
        None if ann.aux_note is None else [a for a, k in zip(ann.aux_note, keep, strict=True) if k]
    )
    wfdb.wrann(
        nst.name,
        "atr",
        sample,
        symbol=[s for s, k in zip(ann.symbol, keep, strict=True) if k],
        subtype=cut(ann.subtype),
        chan=cut(ann.chan),
        num=cut(ann.num),
        aux_note=aux,
        fs=nst.fs,
        write_dir=str(out_dir),
    )
