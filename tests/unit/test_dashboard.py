"""The 12-lead anomaly dashboard's API on real PTB-XL and MIT-BIH uploads, and its refusals (no browser)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.preprocessing.filtering import filter_signal
from stream.dashboard.analysis import UploadError, load_upload
from stream.dashboard.app import create_dashboard
from stream.records import TWELVE_LEADS, read_record
from stream.settings import Settings

PTBXL = Path("ptbxl") / "records100" / "01000" / "01002_lr"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(
        create_dashboard(
            Settings(
                dashboard_max_upload_bytes=2_000_000,
                dashboard_max_windows=3,
                dashboard_uploads_per_minute=10_000,
            )
        )
    )


def _wfdb_files(data_dir: Path, rel: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    base = (
        data_dir / rel
    )  # the header and every signal file it names (this PTB-XL copy: <name>_1.dat, _2.dat)
    return [
        ("files", (p.name, p.read_bytes(), "application/octet-stream"))
        for p in sorted(base.parent.glob(base.name + "*"))
    ]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _metric(client: TestClient, line_start: str) -> float:
    text = client.get("/metrics").text
    return float(next(ln for ln in text.splitlines() if ln.startswith(line_start)).split()[-1])


def test_models_are_offered_with_their_thresholds(client):
    info = client.get("/api/models").json()
    names = {m["name"]: m for m in info["models"]}
    assert set(names) == {"cae12", "vae_bilstm", "vae_bilstm_mha"}
    assert names["vae_bilstm_mha"]["attention"] and not names["cae12"]["attention"]
    assert all(np.isfinite(m["threshold"]) for m in names.values())
    page = client.get("/")
    assert page.status_code == 200 and "12-lead anomaly dashboard" in page.text


def test_wfdb_upload_is_scored_with_attention(client, data_dir):
    before = _metric(client, 'ecg_dashboard_analyses_total{model="vae_bilstm_mha"}')
    r = client.post(
        "/api/analyze", files=_wfdb_files(data_dir, PTBXL), data={"model": "vae_bilstm_mha"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["model"] == "vae_bilstm_mha"
        and body["leads"] == list(TWELVE_LEADS)
        and body["rebuilt_leads"] == []
    )
    assert len(body["windows"]) == 1 and body["windows_total"] == 1  # a PTB-XL record is 10 s
    w = body["windows"][0]
    assert (
        np.array(w["original"]).shape
        == np.array(w["recon"]).shape
        == np.array(w["error"]).shape
        == (12, 1000)
    )
    assert w["anomalous"] == (w["score"] > body["threshold"])
    assert (
        sum(w["lead_attention"].values()) == pytest.approx(1.0, abs=1e-3)
        and len(w["time_attention"]) == 1000
    )
    err = (np.array(w["original"]) - np.array(w["recon"])) ** 2
    np.testing.assert_allclose(np.array(w["error"]), err, atol=2e-3)  # from the unrounded signals
    # the original is the record filtered exactly as the stream filters it
    rec = read_record(data_dir / PTBXL)
    np.testing.assert_allclose(
        np.array(w["original"]), filter_signal(rec.signal, rec.fs)[:1000].T, atol=1e-4
    )
    assert _metric(client, 'ecg_dashboard_analyses_total{model="vae_bilstm_mha"}') == before + 1


def test_npy_with_some_leads_gets_the_rest_rebuilt(client, data_dir):
    rec = read_record(data_dir / "mitdb" / "100", sampto=360 * 25)  # MLII and V5, 360 Hz, 25 s
    r = client.post(
        "/api/analyze",
        files={"files": ("100.npy", _npy(rec.signal), "application/octet-stream")},
        data={"model": "cae12", "fs": "360", "leads": ",".join(rec.leads)},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["rebuilt_leads"]) == set(TWELVE_LEADS) - {"II", "V5"}
    assert len(body["windows"]) == 2 and body["windows"][1]["start_s"] == 10.0
    assert body["windows"][0]["lead_attention"] is None


@pytest.mark.parametrize(
    ("upload", "form", "status", "reason"),
    [
        (
            {"files": ("x.npy", b"not an array", "application/octet-stream")},
            {"fs": "100"},
            422,
            "format",
        ),
        (
            {
                "files": (
                    "x.npy",
                    _npy(np.full((1000, 12), np.nan, np.float32)),
                    "application/octet-stream",
                )
            },
            {"fs": "100"},
            422,
            "nan",
        ),
        (
            {"files": ("x.npy", _npy(np.zeros((500, 12), np.float32)), "application/octet-stream")},
            {"fs": "100"},
            422,
            "too_short",
        ),
        (
            {
                "files": (
                    "x.npy",
                    _npy(np.zeros((2000, 12), np.float32)),
                    "application/octet-stream",
                )
            },
            {"fs": "5"},
            422,
            "rate",
        ),
        (
            {
                "files": (
                    "x.npy",
                    _npy(np.zeros((2000, 3, 4), np.float32)),
                    "application/octet-stream",
                )
            },
            {"fs": "100"},
            422,
            "shape",
        ),
        (
            {"files": ("x.npy", _npy(np.zeros((2000, 2), np.float32)), "application/octet-stream")},
            {"fs": "100", "leads": "II,Z9"},
            422,
            "unknown_lead",
        ),
        (
            {
                "files": (
                    "x.npy",
                    _npy(np.zeros((2000, 12), np.float32)),
                    "application/octet-stream",
                )
            },
            {"fs": "100", "model": "gpt"},
            422,
            "unknown_model",
        ),
        (
            {
                "files": (
                    "x.npy",
                    _npy(np.zeros((400_000, 12), np.float32)),
                    "application/octet-stream",
                )
            },
            {"fs": "100"},
            413,
            "too_large",
        ),
        (
            {"files": ("r.hea", b"r 12 100 1000\nr.dat 16 1000 16 0 0 0 0 I\n", "text/plain")},
            {},
            422,
            "corrupt_wfdb",
        ),
        ({}, {"fs": "100"}, 422, "format"),
    ],
)
def test_bad_uploads_are_refused_with_their_reason_and_counted(
    client, upload, form, status, reason
):
    before = _metric(client, f'ecg_dashboard_rejected_uploads_total{{reason="{reason}"}}')
    r = client.post("/api/analyze", files=upload or None, data=form)
    assert r.status_code == status, r.text
    assert r.json()["reason"] == reason and r.json()["error"]
    assert (
        _metric(client, f'ecg_dashboard_rejected_uploads_total{{reason="{reason}"}}') == before + 1
    )
    assert client.get("/healthz").json() == {"status": "ok"}  # the server keeps serving


def test_corrupt_dat_file_is_a_clear_error(data_dir):
    base = data_dir / PTBXL
    files = {
        p.name: p.read_bytes()[:100] if p.suffix == ".dat" else p.read_bytes()
        for p in base.parent.glob(base.name + "*")
    }
    with pytest.raises(UploadError) as exc:
        load_upload(files)
    assert exc.value.reason == "corrupt_wfdb" and "01002_lr" in str(exc.value)
    with pytest.raises(UploadError, match="not allowed"):
        load_upload({"../x.hea": b"", "x.dat": b""})
