"""The dashboard's upload limits: what an upload may decode is bounded before it is decoded (FLAC WFDB
bombs, ``.npy`` headers), a chunked body is cut off as it streams, and bad file names are a 400, never a
500. Each refusal is a 4xx ``{"error", "reason"}`` counted by reason."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import wfdb
from fastapi import FastAPI
from fastapi.testclient import TestClient

from stream.dashboard.analysis import load_upload
from stream.dashboard.app import create_dashboard
from stream.dashboard.uploads import REJECT_REASONS, UploadError, npy_array
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2_000_000
EIGHT = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2"]
PTBXL = Path("ptbxl") / "records100" / "01000" / "01002_lr"


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_dashboard(
        Settings(
            dashboard_max_upload_bytes=LIMIT,
            dashboard_max_windows=2,
            dashboard_uploads_per_minute=10_000,
        ),
        models=("cae12",),
    )


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def _rejected(client: TestClient, reason: str) -> float:
    line = f'ecg_dashboard_rejected_uploads_total{{reason="{reason}"}}'
    text = client.get("/metrics").text
    return float(next(ln for ln in text.splitlines() if ln.startswith(line)).split()[-1])


def _refused(client: TestClient, response: httpx.Response, status: int, reason: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason and body["error"], body
    assert client.get("/healthz").json() == {"status": "ok"}
    return str(body["error"])


_MULTIPART = {"content-type": "multipart/form-data; boundary=XyZ"}


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand (so file names go out exactly as given, NUL included)."""
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (
            "" if filename is None else f'; filename="{filename}"'
        )
        out += b"--XyZ\r\nContent-Disposition: " + disp.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n", _MULTIPART


def _npy(a: np.ndarray, **kwargs: bool) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, **kwargs)
    return buf.getvalue()


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A .npy header declaring ``shape`` with (almost) no data after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + b"\0" * 64


def _wfdb_record(
    directory: Path, name: str, seconds: float, fmt: str = "516", fs: int = 500
) -> dict[str, bytes]:
    """An 8-lead WFDB record written by wfdb.wrsamp (FLAC by default), as name -> bytes."""
    t = np.arange(int(seconds * fs)) / fs
    sig = np.stack([0.5 * np.sin(2 * np.pi * 1.2 * t + k) for k in range(8)], axis=1)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * 8,
        sig_name=EIGHT,
        p_signal=sig,
        fmt=[fmt] * 8,
        adc_gain=[1000.0] * 8,
        baseline=[0] * 8,
        write_dir=str(directory),
    )
    return {p.name: p.read_bytes() for p in sorted(directory.glob(name + ".*"))}


def _with_sig_len(header: bytes, sig_len: int) -> bytes:
    """The header with its record line's length replaced."""
    lines = header.decode().splitlines()
    fields = lines[0].split()
    fields[3] = str(sig_len)
    return "\n".join([" ".join(fields), *lines[1:]]).encode() + b"\n"


def _flac_bomb(frames: int, channels: int = 8) -> bytes:
    """A FLAC stream of ``frames`` constant frames: a few kilobytes that decode to frames x channels."""
    buf = io.BytesIO()
    block = np.full((1 << 16, channels), 100, dtype=np.int16)
    with soundfile.SoundFile(
        buf, "w", samplerate=48000, channels=channels, format="FLAC", subtype="PCM_16"
    ) as f:
        for start in range(0, frames, len(block)):
            f.write(block[: min(len(block), frames - start)])
    return buf.getvalue()


def _bomb_header(name: str, sig_len: int) -> bytes:
    lines = [f"{name} 8 500 {sig_len}"]
    lines += [f"{name}.dat 516 1000(0)/mV 16 0 0 0 0 {lead}" for lead in EIGHT]
    return ("\n".join(lines) + "\n").encode()


def _unknown_total(flac: bytes) -> bytes:
    """The FLAC stream with STREAMINFO's total-samples field set to 0 ("unknown", as the format allows)."""
    bits = int.from_bytes(flac[18:26], "big") & ~((1 << 36) - 1)
    return flac[:18] + bits.to_bytes(8, "big") + flac[26:]


# --- decoded size ------------------------------------------------------------------------------------

#: Run in a fresh interpreter so that its peak RSS (ru_maxrss) starts at the app's own and the growth
#: each upload causes is measured, not hidden under the test session's earlier peaks.
_RSS_CHILD = r"""
import json, resource, sys
from pathlib import Path
from fastapi.testclient import TestClient
from stream.dashboard.app import create_dashboard
from stream.settings import Settings

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

client = TestClient(create_dashboard(Settings(), models=("cae12",)))
client.get("/healthz")
out = []
for d in sys.argv[1:]:
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in sorted(Path(d).iterdir())]
    before = peak_mb()
    r = client.post("/api/analyze", files=files, data={"model": "cae12"})
    out.append({"status": r.status_code, "body": r.json(), "rss_growth_mb": peak_mb() - before,
                "upload_bytes": sum(len(f[1][1]) for f in files)})
print("RESULT " + json.dumps(out))
"""


def test_flac_bomb_is_refused_before_it_is_decoded_and_rss_stays_flat(tmp_path: Path) -> None:
    """A 24 KB FLAC record holding 8 x 3,000,000 samples (the HEAD before this check answered it 200
    after growing RSS by ~880 MB) is refused 413 from its header; the same stream under a header declaring
    20 s is decoded only to those 20 s, even with STREAMINFO's total zeroed (unknown)."""
    flac = _flac_bomb(3_000_000)
    bomb, capped = tmp_path / "bomb", tmp_path / "capped"
    bomb.mkdir()
    capped.mkdir()
    (bomb / "bomb.hea").write_bytes(_bomb_header("bomb", 3_000_000))
    (bomb / "bomb.dat").write_bytes(flac)
    (capped / "capped.hea").write_bytes(_bomb_header("capped", 10_000))
    (capped / "capped.dat").write_bytes(_unknown_total(flac))
    run = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(bomb), str(capped)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    refused, decoded = json.loads(run.stdout.split("RESULT ", 1)[1])
    print(
        f"FLAC bomb ({refused['upload_bytes']} bytes): RSS growth {refused['rss_growth_mb']:.1f} MB"
    )
    print(f"capped decode: RSS growth {decoded['rss_growth_mb']:.1f} MB")
    assert refused["status"] == 413 and refused["body"]["reason"] == "too_many_samples"
    assert "24000000 samples" in refused["body"]["error"]
    assert refused["upload_bytes"] < 100_000
    assert refused["rss_growth_mb"] < 100
    assert decoded["status"] == 200, decoded["body"]
    assert decoded["body"]["duration_s"] == 20.0  # 10,000 frames at 500 Hz, not 3,000,000
    assert decoded["rss_growth_mb"] < 100


def test_flac_header_edited_to_a_huge_length_is_refused(client: TestClient, tmp_path: Path) -> None:
    files = _wfdb_record(tmp_path, "r", seconds=12)  # wrsamp, format 516, 8 leads, 6,000 frames
    files["r.hea"] = _with_sig_len(files["r.hea"], 900_000_000)
    before = _rejected(client, "too_many_samples")
    r = client.post("/api/analyze", files=[("files", (n, d)) for n, d in files.items()])
    msg = _refused(client, r, 413, "too_many_samples")
    assert "7200000" in msg and "ECG_DASHBOARD_MAX_SAMPLES" in msg
    assert _rejected(client, "too_many_samples") == before + 1
    # a length under the limit but not the one the FLAC stream holds is inconsistent
    files["r.hea"] = _with_sig_len(files["r.hea"], 7_000)
    with pytest.raises(UploadError) as exc:
        load_upload(files)
    assert exc.value.reason == "corrupt_wfdb" and "6000 per channel" in str(exc.value)


def test_sample_limit_is_the_setting_and_is_inclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECG_DASHBOARD_MAX_SAMPLES", "48000")
    assert Settings().dashboard_max_samples == 48_000
    files = _wfdb_record(tmp_path, "r", seconds=12)  # 6,000 frames x 8 signals = 48,000 samples
    assert load_upload(files, max_samples=48_000).signal.shape == (6000, 12)
    with pytest.raises(UploadError) as exc:
        load_upload(files, max_samples=47_999)
    assert exc.value.reason == "too_many_samples"
    x = _npy(np.zeros((4000, 12), np.float32))  # 48,000 samples
    assert load_upload({"x.npy": x}, fs=250, max_samples=48_000).signal.shape == (4000, 12)
    with pytest.raises(UploadError, match="over the 47999-sample limit"):
        load_upload({"x.npy": x}, fs=250, max_samples=47_999)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda f: {**f, "u.dat": f["u.dat"][:-300]}, "corrupt_wfdb"),  # shorter than declared
        (lambda f: {**f, "u.dat": f["u.dat"] + b"\0" * 300}, "corrupt_wfdb"),  # longer
        (lambda f: {**f, "u.hea": b"u 2 500 6000\nu.dat 16 200 12 0 0 0 0 II\n"}, "corrupt_wfdb"),
        (lambda f: {**f, "u.hea": b"\xff\xfe garbage\n"}, "corrupt_wfdb"),
        (lambda f: {**f, "u.hea": b"u 1 500 6000\nu.dat 999 200 12 0 0 0 0 II\n"}, "corrupt_wfdb"),
        (lambda f: {**f, "u.hea": f["u.hea"].replace(b"u 8 500", b"u 8 5")}, "rate"),
        (lambda f: {**f, "u.hea": b"u/2 2 500 6000\nu_1 3000\nu_2 3000\n"}, "format"),
        (lambda f: {**f, "u.hea": f["u.hea"] + b"#" * 300_000}, "corrupt_wfdb"),
    ],
    ids=[
        "short_dat",
        "long_dat",
        "n_sig",
        "garbage",
        "bad_fmt",
        "rate",
        "multisegment",
        "huge_hea",
    ],
)
def test_wfdb_headers_and_sizes_are_checked_before_reading(tmp_path, edit, reason) -> None:
    files = _wfdb_record(tmp_path, "u", seconds=12, fmt="212")
    assert load_upload(files).signal.shape == (6000, 12)
    with pytest.raises(UploadError) as exc:
        load_upload(edit(files))
    assert exc.value.reason == reason, exc.value


def test_wfdb_header_without_length_is_read_as_wfdb_infers_it(tmp_path: Path) -> None:
    files = _wfdb_record(tmp_path, "u", seconds=12, fmt="212")
    lines = files["u.hea"].decode().splitlines()
    files["u.hea"] = "\n".join(["u 8 500", *lines[1:]]).encode()
    assert load_upload(files).signal.shape == (6000, 12)
    with pytest.raises(UploadError) as exc:
        load_upload(files, max_samples=47_999)
    assert exc.value.reason == "too_many_samples"
    flac = _wfdb_record(tmp_path, "r", seconds=12)
    flac["r.hea"] = b"r 8 500\n" + flac["r.hea"].split(b"\n", 1)[1]
    with pytest.raises(UploadError, match="must declare its length"):
        load_upload(flac)


# --- .npy ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (_npy(np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True), 422, "format"),
        (_npy(np.zeros((2000, 12), dtype=[("a", "<f4")])), 422, "format"),
        (_npy(np.zeros((2000, 12), np.complex64)), 422, "format"),
        (_npy_header_only((10**12, 12)), 413, "too_many_samples"),
        (_npy_header_only((2**62, 2**62)), 413, "too_many_samples"),
        (_npy_header_only((2000, 12)), 422, "format"),  # 64 bytes where 96,000 are declared
        (_npy(np.zeros((2000, 12), np.float32)) + b"\0" * 16, 422, "format"),
        (b"\x93NUMPY\x03\x00" + b"\0" * 64, 422, "format"),
    ],
    ids=["object", "structured", "complex", "huge", "overflow", "short", "long", "version"],
)
def test_npy_header_is_checked_before_the_array_is_read(client, data, status, reason) -> None:
    before = _rejected(client, reason)
    r = client.post(
        "/api/analyze", files={"files": ("x.npy", data)}, data={"fs": "200", "model": "cae12"}
    )
    _refused(client, r, status, reason)
    assert _rejected(client, reason) == before + 1


def test_npy_is_read_from_its_bytes_whatever_its_layout() -> None:
    a = np.random.default_rng(0).normal(size=(3000, 12)).astype(np.float32)
    for variant in (a, np.asfortranarray(a), a.astype(">f4"), a.astype(np.float64), a.T.copy()):
        got = npy_array("x.npy", _npy(variant))
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), variant)
    assert load_upload({"x.npy": _npy(a.T.copy())}, fs=250).signal.shape == (3000, 12)


# --- streamed byte limit -------------------------------------------------------------------------------


async def test_chunked_body_is_cut_off_at_the_limit_while_it_streams(app: FastAPI) -> None:
    """200 MB sent chunked (no Content-Length): refused 413 once the limit is passed; the client's
    generator is asked for at most the limit plus one chunk."""
    chunk, total = 64 * 1024, 200_000_000
    head = (
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="big.npy"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        sent += len(head)
        yield head
        block = b"\0" * chunk
        while sent < total:
            sent += chunk
            yield block

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dashboard"
    ) as c:
        request = c.build_request(
            "POST",
            "/api/analyze",
            content=body(),
            headers=_MULTIPART,
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        r = await c.send(request)
    print(f"chunked 200 MB body: {sent} bytes read (limit {LIMIT}, chunk {chunk})")
    assert r.status_code == 413 and r.json()["reason"] == "too_large"
    assert LIMIT < sent <= LIMIT + chunk


async def test_chunked_upload_under_the_limit_keeps_its_form_fields(app, data_dir) -> None:
    base = data_dir / PTBXL
    files = [("files", (p.name, p.read_bytes())) for p in sorted(base.parent.glob(base.name + "*"))]
    encoded = httpx.Request(
        "POST", "http://dashboard/api/analyze", files=files, data={"model": "cae12"}
    )
    payload = encoded.read()

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dashboard"
    ) as c:
        r = await c.post(
            "/api/analyze",
            content=body(),
            headers={"content-type": encoded.headers["content-type"]},
        )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "cae12" and r.json()["name"] == "01002_lr"


def test_declared_length_over_the_limit_is_refused_unread(client: TestClient) -> None:
    body, headers = _multipart([("files", "x.npy", b"\0" * (LIMIT + 1))])
    r = client.post("/api/analyze", content=body, headers=headers)
    assert "over the 2000000-byte limit" in _refused(client, r, 413, "too_large")


# --- file names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        [("files", "..", b"x")],
        [("files", "r.hea", b"r 1 500 6000\n"), ("files", "..", b"\0" * 12000)],
        [("files", "../x.hea", b"x 1 500 6000\n")],
        [("files", "/etc/x.hea", b"x 1 500 6000\n")],
        [("files", "x\0.hea", b"x 1 500 6000\n")],
        [("files", ".hea", b"x 1 500 6000\n")],
        [("files", "..\\x.npy", b"x")],
        [("files", "a b.hea", b"x")],
        [("files", "", b"content without a name")],
        [("files", "r.hea", b"r 1 500 6000\n"), ("files", "r.hea", b"r 1 500 6000\n")],
    ],
    ids=[
        "dotdot",
        "dotdot_dat",
        "traversal",
        "absolute",
        "nul",
        "hidden",
        "backslash",
        "space_wfdb",
        "empty",
        "duplicate",
    ],
)
def test_bad_file_names_are_400_bad_filename(client: TestClient, parts) -> None:
    before = _rejected(client, "bad_filename")
    body, headers = _multipart(parts)
    r = client.post("/api/analyze", content=body, headers=headers)
    _refused(client, r, 400, "bad_filename")
    assert _rejected(client, "bad_filename") == before + 1


def test_wfdb_names_must_be_the_headers(client: TestClient, tmp_path: Path) -> None:
    files = _wfdb_record(tmp_path, "u", seconds=12, fmt="212")
    cases = {
        "record name": {"v.hea": files["u.hea"], "u.dat": files["u.dat"]},
        "missing signal file": {"u.hea": files["u.hea"]},
        "extra file": {**files, "u.atr": b"annotations"},
        "renamed signal file": {"u.hea": files["u.hea"], "v.dat": files["u.dat"]},
    }
    for case, upload in cases.items():
        r = client.post("/api/analyze", files=[("files", (n, d)) for n, d in upload.items()])
        assert r.status_code == 400 and r.json()["reason"] == "bad_filename", (case, r.text)
    ok = client.post("/api/analyze", files=[("files", (n, d)) for n, d in files.items()])
    assert ok.status_code == 200, ok.text


def test_a_plain_npy_name_may_have_spaces_and_an_empty_file_input_is_ignored(
    client: TestClient,
) -> None:
    x = _npy(np.zeros((3000, 12), np.float32))
    body, headers = _multipart(
        [
            ("files", "my ecg.npy", x),
            ("files", "", b""),
            ("fs", None, b"250"),
            ("model", None, b"cae12"),
        ]
    )
    r = client.post("/api/analyze", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "my ecg.npy"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"fs=250", {"content-type": "application/x-www-form-urlencoded"}),
        (_multipart([("files", "x.npy", b"abc")])[0][:-9], _MULTIPART),  # no closing boundary
        (_multipart([("other", "x.npy", b"x")])[0], _MULTIPART),
        (_multipart([("fs", None, b"fast")])[0], _MULTIPART),
        (_multipart([("leads", None, b"I," * 5000)])[0], _MULTIPART),
        (_multipart([("model", None, b"\xff")])[0], _MULTIPART),
        (_multipart([("files", f"x{i}.hea", b"") for i in range(40)])[0], _MULTIPART),
    ],
    ids=["not_multipart", "truncated", "wrong_field", "fs", "long_field", "not_utf8", "many_files"],
)
def test_malformed_forms_are_422_format(client: TestClient, body, headers) -> None:
    r = client.post("/api/analyze", content=body, headers=headers)
    _refused(client, r, 422, "format")


def test_new_reasons_are_exported_from_the_start(client: TestClient) -> None:
    assert {"too_many_samples", "bad_filename"} <= set(REJECT_REASONS)
    for reason in REJECT_REASONS:
        _rejected(client, reason)  # every label is on /metrics before any refusal
