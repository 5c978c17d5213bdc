"""Reading WFDB records and annotations, one implementation for the simulator, the stream and training.

Databases live under ``Settings.data_dir`` in their PhysioNet layout::

    mitdb/100.hea ...   nstdb/bw.hea ...   ludb/data/1.hea ...   ptbxl/records100/00000/00001_lr.hea ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from models.preprocessing.leads import TWELVE_LEADS  # canonical 12-lead order, re-exported here
from stream.errors import DataError, DataMissingError, UnknownRecordError

_LEAD_ALIASES = {name.lower(): name for name in TWELVE_LEADS}
_LEAD_ALIASES.update({"mlii": "MLII", "mli": "MLI", "mliii": "MLIII"})
#: Every lead name the telemetry schema accepts (the 12 standard leads, MIT-BIH's modified limb leads).
KNOWN_LEADS: frozenset[str] = frozenset([*TWELVE_LEADS, "MLII", "MLI", "MLIII"])

#: PhysioNet slugs and versions of the databases ecg-monitor uses.
PHYSIONET_DATABASES: dict[str, tuple[str, str]] = {
    "mitdb": ("mitdb", "1.0.0"),
    "nstdb": ("nstdb", "1.0.0"),
    "ludb": ("ludb", "1.0.1"),
    "ptbxl": ("ptb-xl", "1.0.3"),
}

#: Every annotation symbol that marks a beat (QRS complex) in MIT-BIH (the keys of
#: ``training.datasets.mitdb_split.AAMI_CLASSES``, which maps them to AAMI EC57 classes).
BEAT_SYMBOLS: frozenset[str] = frozenset(
    ["N", "L", "R", "e", "j", "A", "a", "J", "S", "V", "E", "F", "/", "f", "Q"]
)


def canonical_lead(name: str) -> str:
    """Map a WFDB signal name (``i``, ``avr``, ``MLII``...) to ecg-monitor's canonical spelling."""
    key = name.strip().lower()
    if key in _LEAD_ALIASES:
        return _LEAD_ALIASES[key]
    raise DataError(f"unknown lead name {name!r}; known: {sorted(KNOWN_LEADS)}")


@dataclass(frozen=True)
class Record:
    """A WFDB record in physical units: ``signal`` is float32 [n_samples, n_leads] in ``units``;
    ``adc_range_mv`` is each lead's representable range ``((lo, hi), ...)`` in ``units`` (its ADC rails,
    from the header: :func:`adc_range`), None when the header does not tell."""

    name: str
    fs: float
    leads: tuple[str, ...]
    signal: np.ndarray
    units: tuple[str, ...] = field(default_factory=tuple)
    adc_range_mv: tuple[tuple[float, float], ...] | None = None

    @property
    def duration_s(self) -> float:
        return self.signal.shape[0] / self.fs

    def lead(self, name: str) -> np.ndarray:
        """One lead as a 1-D float32 array."""
        try:
            return self.signal[:, self.leads.index(name)]
        except ValueError as exc:
            raise DataError(
                f"record {self.name} has no lead {name!r}; it has {self.leads}"
            ) from exc


@dataclass(frozen=True)
class Annotations:
    """Annotation sample indices and symbols of one record."""

    sample: np.ndarray
    symbol: np.ndarray

    def beats(self) -> Annotations:
        """Only the annotations that mark beats (QRS complexes)."""
        keep = np.isin(self.symbol, list(BEAT_SYMBOLS))
        return Annotations(self.sample[keep], self.symbol[keep])


#: Bits per sample of the WFDB storage formats, used when a header gives no ADC resolution.
WFDB_FMT_BITS: dict[str, int] = {
    "8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12, "310": 10, "311": 10,
}  # fmt: skip


def adc_range(rec: object) -> tuple[tuple[float, float], ...] | None:
    """Representable physical range per signal of a ``wfdb.Record`` (or header): the digital range
    ``adc_zero - 2**(bits-1) .. adc_zero + 2**(bits-1) - 1`` (``bits`` = ``adc_res``, else the bit depth
    of ``fmt``) mapped through ``(d - baseline) / adc_gain``. MIT-BIH (11 bits, zero 1024, gain 200):
    -5.12 .. +5.115 mV. None when a signal's gain or bit depth is unknown."""
    out = []
    n = len(getattr(rec, "sig_name", None) or [])
    for i in range(n):
        try:
            gain = float(rec.adc_gain[i])  # type: ignore[attr-defined]
            res = int((rec.adc_res or [0] * n)[i] or 0)  # type: ignore[attr-defined]
            bits = res if res > 0 else WFDB_FMT_BITS.get(str(rec.fmt[i]), 0)  # type: ignore[attr-defined]
            zero = int((rec.adc_zero or [0] * n)[i] or 0)  # type: ignore[attr-defined]
            base = rec.baseline[i] if rec.baseline else None  # type: ignore[attr-defined]
        except (AttributeError, IndexError, TypeError, ValueError):
            return None
        if not (gain > 0 and bits > 0):
            return None
        base = zero if base is None else int(base)
        dmin, dmax = zero - 2 ** (bits - 1), zero + 2 ** (bits - 1) - 1
        out.append(((dmin - base) / gain, (dmax - base) / gain))
    return tuple(out) if out else None


def read_record(path: str | Path, sampfrom: int = 0, sampto: int | None = None) -> Record:
    """Read a WFDB record (``path`` without extension) in physical units, NaN where samples are invalid.

    Raises :class:`DataError` for a missing or corrupt record.
    """
    path = Path(path)
    try:
        rec = wfdb.rdrecord(str(path), sampfrom=sampfrom, sampto=sampto)
    except FileNotFoundError as exc:
        raise DataError(f"WFDB record not found: {path} (.hea/.dat)") from exc
    except (
        Exception
    ) as exc:  # wfdb raises ValueError, IndexError, struct errors... on corrupt files
        raise DataError(f"corrupt or unreadable WFDB record {path}: {exc}") from exc
    if rec.p_signal is None or rec.p_signal.ndim != 2:
        raise DataError(f"WFDB record {path} has no physical signal")
    leads = tuple(canonical_lead(n) for n in rec.sig_name)
    return Record(
        name=path.name,
        fs=float(rec.fs),
        leads=leads,
        signal=np.asarray(rec.p_signal, dtype=np.float32),
        units=tuple(rec.units or ["mV"] * len(leads)),
        adc_range_mv=adc_range(rec),
    )


def read_annotations(path: str | Path, extension: str = "atr") -> Annotations:
    """Read a WFDB annotation file (e.g. MIT-BIH ``.atr``, LUDB ``.ii``)."""
    path = Path(path)
    try:
        ann = wfdb.rdann(str(path), extension)
    except FileNotFoundError as exc:
        raise DataError(f"annotation file not found: {path}.{extension}") from exc
    except Exception as exc:
        raise DataError(f"corrupt annotation file {path}.{extension}: {exc}") from exc
    return Annotations(np.asarray(ann.sample, dtype=np.int64), np.asarray(ann.symbol))


def list_records(db_dir: str | Path) -> list[str]:
    """Record paths (relative to ``db_dir``, no extension) from its RECORDS file, or from ``*.hea``."""
    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise DataError(
            f"database directory not found: {db_dir}; set ECG_DATA_DIR or run `python -m training data download`"
        )
    listing = db_dir / "RECORDS"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        names = [n for n in names if (db_dir / f"{n}.hea").is_file()]
        if names:
            return names
    return sorted(str(p.relative_to(db_dir).with_suffix("")) for p in db_dir.rglob("*.hea"))


def resolve_record_specs(specs: Sequence[str], data_dir: str | Path) -> list[tuple[str, Path]]:
    """Turn record paths (``mitdb/100``) and database dirs (``mitdb``, ``ludb/data``, ``ptbxl/records100``)
    into ``(display name, WFDB path)`` pairs, reading headers only. Paths are tried as given, then under
    ``data_dir``.

    A spec that is nowhere is :class:`DataMissingError` when its database is missing (``ECG_DATA_DIR`` does
    not exist, or ``mitdb/...`` is asked and ``data_dir/mitdb`` is not there) and :class:`UnknownRecordError`
    when the database is there but holds no such record.
    """
    data_dir = Path(data_dir)
    out: list[tuple[str, Path]] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        for base in (Path(spec), data_dir / spec):
            if base.with_suffix(".hea").is_file() or Path(f"{base}.hea").is_file():
                out.append((spec, base))
                break
            if base.is_dir():
                out += [(f"{spec.rstrip('/')}/{name}", base / name) for name in list_records(base)]
                break
        else:
            raise _missing_source(spec, data_dir)
    if not out:
        raise DataMissingError(
            f"no WFDB records found in {list(specs)} under ECG_DATA_DIR={data_dir}"
        )
    return out


def _missing_source(spec: str, data_dir: Path) -> DataError:
    """Why ``spec`` is neither a record nor a database: its database is missing, or it is not in it."""
    download = "python -m training data download"
    path = Path(spec)
    if path.is_absolute():
        if path.parent.is_dir():
            return UnknownRecordError(f"no WFDB record or database at {spec!r}: unknown record")
        return DataMissingError(
            f"no WFDB record or database at {spec!r}: {path.parent} does not exist"
        )
    if not data_dir.is_dir():
        return DataMissingError(
            f"no WFDB record or database at {spec!r}: ECG_DATA_DIR={data_dir} does not exist "
            f"(set ECG_DATA_DIR or run `{download}`)"
        )
    db = path.parts[0] if path.parts else spec
    if not (data_dir / db).is_dir():
        hint = f"run `{download} --db {db}`" if db in PHYSIONET_DATABASES else f"run `{download}`"
        return DataMissingError(
            f"no WFDB record or database at {spec!r}: database {db!r} not found under "
            f"ECG_DATA_DIR={data_dir} ({hint})"
        )
    return UnknownRecordError(
        f"no WFDB record or database at {spec!r}: unknown record (not under ECG_DATA_DIR={data_dir})"
    )


def mitdb_records(data_dir: str | Path) -> list[str]:
    """The 48 MIT-BIH Arrhythmia record names present under ``data_dir/mitdb``."""
    return [n for n in list_records(Path(data_dir) / "mitdb") if n.isdigit()]


def download_database(db: str, data_dir: str | Path) -> Path:
    """Download one database from PhysioNet with ``wfdb.dl_database`` into ``data_dir/db``."""
    if db not in PHYSIONET_DATABASES:
        raise DataError(f"unknown database {db!r}; choose from {sorted(PHYSIONET_DATABASES)}")
    slug, version = PHYSIONET_DATABASES[db]
    target = Path(data_dir) / db
    target.mkdir(parents=True, exist_ok=True)
    wfdb.dl_database(f"{slug}/{version}", dl_dir=str(target))
    return target
