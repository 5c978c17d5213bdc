"""What an upload may cost, decided before anything is decoded.

The byte limit (``ECG_DASHBOARD_MAX_UPLOAD_BYTES``) bounds what is received, not what is decoded: a FLAC
WFDB signal file (formats 508/516/524) of a few kilobytes can hold hundreds of millions of samples, and a
``.npy`` header can declare any shape. So every upload is checked here, from its headers alone, against
``ECG_DASHBOARD_MAX_SAMPLES`` (decoded samples, all signals and all frames):

- file names: plain names only (no directories, no ``.``/``..``, no leading dot, no control characters);
  a WFDB record's names must also be the ones its header gives (the record name, the signal files);
- ``.npy``: the array header (``numpy.lib.format``) gives dtype and shape; object (pickled) and
  non-numeric dtypes, arrays over the sample limit and files whose size is not the declared one are
  refused, and the array is then read from the bytes (no copy, no pickle);
- WFDB: the header is parsed by wfdb's header reader (no signal is read), then the declared length times
  the samples per frame (skew and, for FLAC, the sample offset included) is held to the limit, the sampling
  rate to the configured range, and each signal file to its declared size: uncompressed formats byte for
  byte, FLAC by its STREAMINFO block (channels, bits, total samples). The record is then read with
  ``sampto`` the declared length, so nothing past it is decoded.

Everything refused raises :class:`UploadError` with a reason from :data:`REJECT_REASONS`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.errors import DataError

#: Reasons an upload is refused (the label values of ``ecg_dashboard_rejected_uploads_total``).
REJECT_REASONS: tuple[str, ...] = (
    "too_large",
    "too_many_samples",
    "bad_filename",
    "format",
    "shape",
    "rate",
    "too_short",
    "nan",
    "unknown_lead",
    "corrupt_wfdb",
    "unknown_model",
)
#: HTTP status of each refusal; the others are 422.
REJECT_STATUS: dict[str, int] = {"too_large": 413, "too_many_samples": 413, "bad_filename": 400}
#: Default of ``ECG_DASHBOARD_MAX_SAMPLES``: 12 leads x 10 min at 1 kHz (kept equal to the setting's).
DEFAULT_MAX_SAMPLES = 7_200_000
#: A WFDB header larger than this is refused unread (real ones are a few kilobytes).
MAX_HEADER_BYTES = 256 * 1024
#: Signals a WFDB header may declare (the dashboard reads the 12 standard leads).
MAX_SIGNALS = 64

_MAX_NAME = 128
#: Names written to disk (a WFDB record's files): what WFDB headers can name.
_WFDB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
#: WFDB storage formats read uncompressed: bytes per sample as a fraction (numerator, denominator).
_BYTES_PER_SAMPLE: dict[str, tuple[int, int]] = {
    "8": (1, 1),
    "16": (2, 1),
    "24": (3, 1),
    "32": (4, 1),
    "61": (2, 1),
    "80": (1, 1),
    "160": (2, 1),
    "212": (3, 2),
    "310": (4, 3),
    "311": (4, 3),
}
#: FLAC WFDB formats -> the most bits per sample they may hold.
_FLAC_BITS: dict[str, int] = {"508": 8, "516": 16, "524": 24}


class UploadError(DataError):
    """An upload the dashboard refuses; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _shown(name: str) -> str:
    """A file name as an error message shows it: repr'd (control characters escaped) and cut short."""
    return repr(name[:_MAX_NAME] + ("..." if len(name) > _MAX_NAME else ""))


def check_filename(name: str, *, wfdb: bool = False) -> str:
    """``name`` when it is a plain file name (``wfdb``: one a WFDB header can name and the dashboard may
    write to its temporary directory), else :class:`UploadError` ``bad_filename``."""
    plain = (
        0 < len(name) <= _MAX_NAME
        and name.isprintable()
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and name == name.strip()
    )
    if not plain or (wfdb and not _WFDB_NAME.fullmatch(name)):
        allowed = "letters, digits, '_', '.', '-'" if wfdb else "a plain file name"
        raise UploadError(
            "bad_filename",
            f"file name {_shown(name)} is not allowed ({allowed}; no directories, no leading '.')",
        )
    return name


# --- .npy -------------------------------------------------------------------------------------------


def npy_array(name: str, data: bytes, max_samples: int = DEFAULT_MAX_SAMPLES) -> np.ndarray:
    """The 2-D real array in the ``.npy`` bytes ``data``, checked by its header before it is read:
    ``format`` (unreadable header, object or non-numeric dtype, size not the declared one), ``shape``
    (not 2-D), ``too_many_samples`` (over ``max_samples``). Read-only, a view of ``data``."""
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # numpy raises ValueError/EOFError/SyntaxError... on a bad header
        raise UploadError("format", f"{name} is not a readable .npy array: {exc}") from exc
    if dtype.hasobject:
        raise UploadError(
            "format",
            f"{name}: object arrays are refused (a .npy upload holds numbers, not pickles)",
        )
    if dtype.kind not in "iuf" or dtype.subdtype is not None:
        raise UploadError(
            "format", f"{name}: dtype {dtype} is not a real numeric type (int, uint, float)"
        )
    if len(shape) != 2:
        raise UploadError(
            "shape", f"{name}: expected a 2-D array [n_samples, n_leads], got shape {shape}"
        )
    count = math.prod(shape)
    if count > max_samples:
        raise UploadError(
            "too_many_samples",
            f"{name}: shape {shape} is {count} samples, over the {max_samples}-sample limit "
            "(ECG_DASHBOARD_MAX_SAMPLES)",
        )
    offset = fp.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise UploadError(
            "format",
            f"{name} holds {len(data) - offset} bytes of array data; its header declares "
            f"{count * dtype.itemsize} ({shape} {dtype})",
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)


# --- WFDB -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WfdbLayout:
    """A WFDB record as its header declares it, checked: ``sampto`` to read it with (``None`` when the
    header omits the length and wfdb infers it, as checked here, from the first signal file's size),
    ``samples`` decoded samples at most."""

    record: str
    fs: float
    n_sig: int
    frames: int
    samples: int
    files: tuple[str, ...]
    sampto: int | None


def _flac_streaminfo(data: bytes) -> tuple[int, int, int]:
    """(channels, bits per sample, total samples per channel, 0 when unknown) of a FLAC stream, from
    its mandatory first metadata block; ValueError if there is none."""
    if data[:4] != b"fLaC":
        raise ValueError("not a FLAC stream (no 'fLaC' signature)")
    if len(data) < 42 or data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        raise ValueError("no STREAMINFO block at the start of the FLAC stream")
    bits = int.from_bytes(data[18:26], "big")
    return ((bits >> 41) & 0x7) + 1, ((bits >> 36) & 0x1F) + 1, bits & ((1 << 36) - 1)


def inspect_wfdb(
    header_path: Path,
    files: Mapping[str, bytes],
    max_samples: int = DEFAULT_MAX_SAMPLES,
    min_fs: float = 50.0,
    max_fs: float = 2000.0,
) -> WfdbLayout:
    """Check the WFDB record whose header is at ``header_path`` (already written there, and in
    ``files`` with its signal files, name -> bytes) without reading any signal."""
    import wfdb

    hea = header_path.name
    stem = hea[: -len(".hea")]
    try:
        h = wfdb.rdheader(str(header_path.with_name(stem)))
    except Exception as exc:  # wfdb raises HeaderSyntaxError, ValueError, IndexError...
        raise UploadError("corrupt_wfdb", f"{hea}: malformed WFDB header ({exc})") from exc
    if isinstance(h, wfdb.MultiRecord):
        raise UploadError(
            "format", f"{hea} is a multi-segment record; upload a single-segment WFDB record"
        )
    if h.record_name != stem:
        raise UploadError(
            "bad_filename",
            f"{hea} describes record {_shown(str(h.record_name))}; the header must be named after "
            "its record",
        )
    names = list(h.file_name or [])
    n_sig = int(h.n_sig or 0)
    if n_sig < 1 or n_sig != len(names):
        raise UploadError(
            "corrupt_wfdb",
            f"{hea}: the record line declares {n_sig} signals, the header describes {len(names)}",
        )
    if n_sig > MAX_SIGNALS:
        raise UploadError("shape", f"{hea} declares {n_sig} signals; at most {MAX_SIGNALS}")
    fs = float(h.fs)
    if not (math.isfinite(fs) and min_fs <= fs <= max_fs):
        raise UploadError(
            "rate", f"{hea}: sampling rate {fs:g} Hz is outside [{min_fs:g}, {max_fs:g}] Hz"
        )
    fmts = [str(f) for f in h.fmt]
    spfs = [1 if s is None else int(s) for s in h.samps_per_frame]
    skews = [0 if s is None else int(s) for s in h.skew]
    offsets = [0 if b is None else int(b) for b in h.byte_offset]
    # the signal files: named safely, each uploaded, nothing else uploaded
    for n in names:
        if n == hea:
            raise UploadError("bad_filename", f"{hea} names itself as a signal file")
        check_filename(n, wfdb=True)
    uploaded = {n for n in files if n != hea}
    if missing := sorted(set(names) - uploaded):
        raise UploadError(
            "bad_filename", f"{hea} names signal files that were not uploaded: {missing}"
        )
    if extra := sorted(uploaded - set(names)):
        raise UploadError(
            "bad_filename",
            f"uploaded files {[_shown(n) for n in extra]} are not signal files of {hea}",
        )
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n, []).append(i)
    for n, idx in groups.items():
        fmt = fmts[idx[0]]
        if fmt not in _BYTES_PER_SAMPLE and fmt not in _FLAC_BITS:
            raise UploadError("corrupt_wfdb", f"{hea}: {n} has unknown WFDB format {fmt}")
        if any(fmts[i] != fmt or offsets[i] != offsets[idx[0]] for i in idx):
            raise UploadError(
                "corrupt_wfdb", f"{hea}: the signals of {n} disagree on their format or offset"
            )
        if any(spfs[i] < 1 or skews[i] < 0 for i in idx):
            raise UploadError(
                "corrupt_wfdb",
                f"{hea}: {n} has a signal with no samples per frame or a negative skew",
            )
        if fmt in _FLAC_BITS and any(spfs[i] != spfs[idx[0]] for i in idx):
            raise UploadError(
                "corrupt_wfdb", f"{hea}: the signals of FLAC file {n} differ in samples per frame"
            )
    # the length: declared, or (uncompressed only) what the first signal file holds, as wfdb infers it
    if h.sig_len is not None:
        frames, sampto = int(h.sig_len), int(h.sig_len)
    else:
        first = names[0]
        if fmts[0] in _FLAC_BITS:
            raise UploadError(
                "corrupt_wfdb", f"{hea}: a FLAC record's header must declare its length"
            )
        num, den = _BYTES_PER_SAMPLE[fmts[0]]
        tspf = sum(spfs[i] for i in groups[first])
        frames, sampto = max(0, (len(files[first]) - offsets[0]) * den // (num * tspf)), None
    # the decoded size, file by file (a FLAC file decodes its sample offset too, to skip it)
    samples = 0
    for idx in groups.values():
        read = frames + max(skews[i] for i in idx)
        per_frame = sum(spfs[i] for i in idx)
        samples += read * per_frame
        if fmts[idx[0]] in _FLAC_BITS:
            samples += offsets[idx[0]] * len(idx)
    if samples > max_samples:
        raise UploadError(
            "too_many_samples",
            f"{hea} declares {frames} frames of {n_sig} signals: {samples} samples, over the "
            f"{max_samples}-sample limit (ECG_DASHBOARD_MAX_SAMPLES)",
        )
    # each signal file against its declared size
    for n, idx in groups.items():
        fmt, offset, data = fmts[idx[0]], offsets[idx[0]], files[n]
        if fmt in _FLAC_BITS:
            try:
                channels, bits, total = _flac_streaminfo(data)
            except ValueError as exc:
                raise UploadError("corrupt_wfdb", f"{n}: {exc}") from exc
            want = offset + frames * spfs[idx[0]]
            if channels != len(idx) or bits > _FLAC_BITS[fmt] or total not in (0, want):
                raise UploadError(
                    "corrupt_wfdb",
                    f"{n} holds {channels} channels of {bits}-bit samples, {total or 'unknown'} per "
                    f"channel; {hea} declares {len(idx)} of at most {_FLAC_BITS[fmt]} bits, {want} "
                    "per channel",
                )
        else:
            num, den = _BYTES_PER_SAMPLE[fmt]
            per_frame = sum(spfs[i] for i in idx)
            want = offset + -(-frames * per_frame * num // den)  # ceil
            slack = -(-per_frame * num // den)  # at most one frame of padding
            if not want <= len(data) <= want + slack:
                raise UploadError(
                    "corrupt_wfdb",
                    f"{n} holds {len(data)} bytes; {hea} declares {want} (format {fmt}, {frames} "
                    f"frames of {per_frame} samples, offset {offset})",
                )
    return WfdbLayout(stem, fs, n_sig, frames, samples, tuple(groups), sampto)
