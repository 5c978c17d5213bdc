"""Dashboard security and live routes without a broker: loopback default, token on a non-loopback bind
(every route but /healthz), rate limits, the SSE stream's snapshot, no patient id in the logs."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from stream.dashboard.app import create_dashboard
from stream.dashboard.security import RateLimiter, StreamSlots, check_bind, is_loopback
from stream.errors import ConfigError
from stream.settings import Settings


def test_bind_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("ward-pc")
    check_bind("127.0.0.1", None)
    with pytest.raises(ConfigError, match="ECG_DASHBOARD_TOKEN"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError):
        create_dashboard(Settings(kafka_bootstrap=""), models=("cae12",), host="0.0.0.0")


@pytest.fixture(scope="module")
def guarded() -> TestClient:
    s = Settings(kafka_bootstrap="", dashboard_token="s3cret", dashboard_uploads_per_minute=2)
    return TestClient(create_dashboard(s, models=("cae12",), host="0.0.0.0"))


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/ward",
        "/patient/p1",
        "/api/models",
        "/metrics",
        "/static/ward.js",
        "/api/live/status",
        "/api/live/events",
    ],
)
def test_token_required_on_every_route_but_healthz(guarded, path):
    r = guarded.get(path)
    assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
    assert guarded.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/healthz").status_code == 200


def test_token_by_header_query_and_cookie(guarded):
    assert (
        guarded.get("/api/live/status", headers={"Authorization": "Bearer s3cret"}).status_code
        == 200
    )
    r = guarded.get("/ward?token=s3cret")
    assert r.status_code == 200 and "ecg_dashboard_token" in r.headers["set-cookie"]
    assert "HttpOnly" in r.headers["set-cookie"]
    assert guarded.get("/static/ward.js").status_code == 200  # the cookie the query set
    guarded.cookies.clear()
    m = guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text
    assert 'ecg_dashboard_refused_requests_total{reason="unauthorized"}' in m


def test_upload_rate_limited(guarded):
    h = {"Authorization": "Bearer s3cret"}
    codes = [
        guarded.post("/api/analyze", headers=h, files={"files": ("x.npy", b"junk")}).status_code
        for _ in range(3)
    ]
    assert codes[:2] == [422, 422] and codes[2] == 429


def test_limiters():
    rl = RateLimiter(2)
    assert rl.allow("a", 0) and rl.allow("a", 1) and not rl.allow("a", 2) and rl.allow("b", 2)
    assert rl.allow("a", 61)
    slots = StreamSlots(total=3, per_key=2)
    assert slots.acquire("a") and slots.acquire("a") and not slots.acquire("a")
    assert slots.acquire("b") and not slots.acquire("c")
    slots.release("a")
    assert slots.acquire("c")


def test_live_routes_without_broker(caplog):
    caplog.set_level(logging.INFO)
    app = create_dashboard(Settings(kafka_bootstrap=""), models=("cae12",))
    with TestClient(app) as c:
        st = c.get("/api/live/status").json()
        assert st["live"] is False and st["streams"] == 0
        hub = app.state.hub
        hub.ingest(
            "alerts",
            json.dumps(
                {
                    "v": 1,
                    "id": "a1",
                    "stream_id": "pat-secret-42",
                    "kind": "asystole",
                    "severity": "critical",
                    "status": "raised",
                    "start": "x",
                    "start_ts": 1.0,
                }
            ).encode(),
            1.0,
        )
        r = c.post("/api/live/alarms/a1/actions", json={"action": "acknowledge", "user": "dr who"})
        assert r.status_code == 503 and r.json()["reason"] == "no_broker"
        assert (
            c.post(
                "/api/live/alarms/zz/actions", json={"action": "acknowledge", "user": "x"}
            ).status_code
            == 404
        )
        assert (
            c.post(
                "/api/live/alarms/a1/actions", json={"action": "delete", "user": "x"}
            ).status_code
            == 422
        )
        assert (
            c.post(
                "/api/live/alarms/a1/actions", json={"action": "silence", "user": ""}
            ).status_code
            == 422
        )
        assert c.get("/api/live/events?view=bogus").status_code == 422
        c.post("/api/analyze", files={"files": ("pat-secret-42.npy", b"junk")})
    assert "pat-secret-42" not in caplog.text
