"""Shared fixtures: the real databases under ECG_DATA_DIR (never committed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the WFDB databases; tests fail (not skip) when it is missing, so CI cannot pass vacuously."""
    root = Path(os.environ.get("ECG_DATA_DIR", "../shared/data")).resolve()
    if not (root / "mitdb" / "100.hea").is_file():
        pytest.fail(f"ECG_DATA_DIR={root} does not hold mitdb/; set ECG_DATA_DIR to the databases")
    return root
