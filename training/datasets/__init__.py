"""Dataset preparation shared by every model: a content-hashed on-disk cache of numpy arrays.

``cached_arrays(name, files, params, build, cache_dir)`` returns the arrays ``build()`` makes, stored as
``<cache_dir>/datasets/<name>-<hash>.npz`` where the hash covers the bytes of every input file, the
preparation parameters and :data:`PREP_VERSION`; a change to any of them rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import DataError

#: Bump when a preparation function changes its output for the same inputs.
PREP_VERSION = 1


def content_hash(files: Iterable[str | Path], params: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex) over the bytes of ``files`` (sorted by path) and the JSON of ``params``."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"params": params, "prep_version": PREP_VERSION}, sort_keys=True, default=str
        ).encode()
    )
    for f in sorted(Path(p) for p in files):
        if not f.is_file():
            raise DataError(f"dataset input missing: {f}")
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def cached_arrays(
    name: str,
    files: Iterable[str | Path],
    params: Mapping[str, Any],
    build: Callable[[], Mapping[str, np.ndarray]],
    cache_dir: str | Path,
) -> dict[str, np.ndarray]:
    """Load ``name``'s arrays from the cache, or ``build()`` and store them (atomic write)."""
    key = content_hash(files, params)
    root = Path(cache_dir) / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = {k: np.asarray(v) for k, v in build().items()}
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return arrays


def wfdb_files(
    db_dir: str | Path, records: Iterable[str], extensions: Iterable[str] = ("hea", "dat", "atr")
) -> list[Path]:
    """The files of ``records`` under ``db_dir`` with ``extensions`` that exist (inputs of the hash)."""
    out = []
    for r in records:
        for ext in extensions:
            p = Path(db_dir) / f"{r}.{ext}"
            if p.is_file():
                out.append(p)
    return out
