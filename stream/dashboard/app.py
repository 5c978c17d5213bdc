"""The dashboard (FastAPI): the live central-station view fed from Kafka, and the 12-lead upload page.

``create_dashboard(settings)`` builds the app; ``ecg-monitor dashboard`` serves it with uvicorn. It is a
separate process from the stream workers (a browser upload must never stall a Kafka partition) and, like
them, imports ONNX Runtime and never torch.

Routes (every one but ``/healthz`` needs the access token when one is set: :mod:`.security`):

- ``GET /``: the upload page (``static/index.html``); ``GET /ward``: the live ward view; ``GET /patient/{id}``:
  one stream live; ``GET /static/*``: their scripts (served by the package: no CDN, so it works offline);
- ``GET /api/live/events?view=ward|patient&stream=ID``: Server-Sent Events of the live view (a snapshot,
  then events: :mod:`stream.dashboard.live`); ``POST /api/live/alarms/{id}/actions``: acknowledge or
  silence an alarm (published on the alarm-actions topic); ``GET /api/live/status``;
- ``GET /api/analyses/{id}/windows/{i}``: one window of a recent upload's analysis (the whole record is
  analysed; the answer to ``/api/analyze`` holds every window's score and the first windows' signals);
- ``GET /api/models``: the offered models with their thresholds and validation figures;
- ``POST /api/analyze``: multipart form with ``files`` (one ``.npy``, or a WFDB ``.hea`` with its signal
  files), ``model``, and for ``.npy`` ``fs`` and optionally ``leads`` (comma-separated names). Answers
  the JSON of :func:`stream.dashboard.analysis.analyse`, or 4xx ``{"error", "reason"}``: 413 for an upload
  over ``ECG_DASHBOARD_MAX_UPLOAD_BYTES`` (refused by its declared length, or as soon as that many bytes
  of a chunked body came: :mod:`stream.dashboard.form`) or declaring more decoded samples than
  ``ECG_DASHBOARD_MAX_SAMPLES`` (:mod:`stream.dashboard.uploads`), 400 for a bad file name, 422 for bad
  input;
- ``GET /metrics``: ``ecg_dashboard_analyses_total{model}``,
  ``ecg_dashboard_rejected_uploads_total{reason}``, ``ecg_dashboard_analysis_duration_seconds``,
  ``ecg_dashboard_refused_requests_total{reason}`` (unauthorized, rate_limited), the live view's
  ``ecg_live_clients{view}``, ``ecg_live_streams``, ``ecg_live_messages_total{topic,result}``,
  ``ecg_live_events_dropped_total{view}`` (slow browsers), ``ecg_live_alert_delay_seconds`` (publish to
  hub) and ``ecg_live_alarm_actions_total{action}``;
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from stream.dashboard.analysis import (
    Analysis,
    analyse_arrays,
    analysis_json,
    dashboard_models,
    load_upload,
    window_json,
)
from stream.dashboard.form import FILES_FIELD, read_upload_form
from stream.dashboard.live import TOPIC_KINDS, VIEWS, LiveHub
from stream.dashboard.security import (
    OPEN_PATHS,
    TOKEN_COOKIE,
    RateLimiter,
    StreamSlots,
    check_bind,
    presented_token,
    token_ok,
)
from stream.dashboard.uploads import REJECT_REASONS, REJECT_STATUS, UploadError
from stream.errors import ModelError
from stream.schemas import AlertMessage
from stream.settings import Settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
#: The upload form as the API docs show it (the handler reads the body itself: :mod:`.form`).
_ANALYZE_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILES_FIELD],
                    "properties": {
                        FILES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one .npy, or a WFDB .hea with its signal files",
                        },
                        "model": {"type": "string"},
                        "fs": {
                            "type": "number",
                            "description": "sampling rate of a .npy upload, Hz",
                        },
                        "leads": {
                            "type": "string",
                            "description": "lead names of a .npy upload, comma-separated",
                        },
                    },
                }
            }
        },
    }
}


class DashboardMetrics:
    """The dashboard's Prometheus metrics (own registry, with the process's memory and CPU like the worker's;
    bounded labels: model names, reject reasons)."""

    def __init__(self, models: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.analyses = Counter(
            "ecg_dashboard_analyses_total",
            "Uploads analysed, by model",
            ["model"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "ecg_dashboard_rejected_uploads_total",
            "Uploads refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ecg_dashboard_analysis_duration_seconds",
            "Time to read, score and answer one upload",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.refused = Counter(
            "ecg_dashboard_refused_requests_total",
            "Requests refused before they were served, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.live_clients = Gauge(
            "ecg_live_clients",
            "Browser event streams open, by view",
            ["view"],
            registry=self.registry,
        )
        self.alert_delay = Histogram(
            "ecg_live_alert_delay_seconds",
            "Wall-clock time from an alert's publication by the worker to the live view's hub",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.actions = Counter(
            "ecg_live_alarm_actions_total",
            "Alarm actions published, by action",
            ["action"],
            registry=self.registry,
        )
        for m in models:
            self.analyses.labels(m)
        for r in REJECT_REASONS:
            self.rejected.labels(r)
        for r in REFUSED_REASONS:
            self.refused.labels(r)
        for v in VIEWS:
            self.live_clients.labels(v)
        for a in ("acknowledge", "silence"):
            self.actions.labels(a)

    def watch(self, hub: LiveHub) -> None:
        """Export the hub's counters (read at scrape time)."""
        self.registry.register(_HubCollector(hub))


#: Reasons of ``ecg_dashboard_refused_requests_total``.
REFUSED_REASONS: tuple[str, ...] = ("unauthorized", "rate_limited", "too_many_streams")
#: Recent analyses kept for their windows to be fetched (each up to 360 windows x 12 leads x 2 signals).
KEPT_ANALYSES = 4
#: Windows whose signals come with the answer to an upload (the others are fetched as the page scrolls).
INLINE_WINDOWS = 6
#: Seconds between keep-alive comments of an idle event stream.
KEEPALIVE_S = 15.0


class _HubCollector(Collector):
    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        c = self.hub.counters
        msgs = CounterMetricFamily(
            "ecg_live_messages",
            "Messages the live view read, by topic kind and result (ok, malformed: skipped)",
            labels=["topic", "result"],
        )
        for kind in TOPIC_KINDS:
            for result in ("ok", "malformed"):
                msgs.add_metric([kind, result], c.messages.get((kind, result), 0))
        yield msgs
        dropped = CounterMetricFamily(
            "ecg_live_events_dropped",
            "Events dropped (oldest first) from the bounded queue of a browser that did not read "
            "them fast enough, by view",
            labels=["view"],
        )
        for v in VIEWS:
            dropped.add_metric([v], c.dropped.get(v, 0))
        yield dropped
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "ecg_live_streams", "Streams on the ward view", value=len(self.hub.streams)
        )


class TokenGate:
    """ASGI middleware: every HTTP route but :data:`OPEN_PATHS` needs ``token`` (see :mod:`.security`)."""

    def __init__(self, app: Any, token: str, on_refuse: Any) -> None:
        self.app = app
        self.token = token
        self.on_refuse = on_refuse

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(Exception):
            jar.load(headers.get("cookie", ""))
        cookies = {k: m.value for k, m in jar.items()}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        given, from_query = presented_token(headers, cookies, query)
        if not token_ok(self.token, given):
            self.on_refuse()
            resp = JSONResponse(
                {
                    "error": "an access token is required (ECG_DASHBOARD_TOKEN)",
                    "reason": "unauthorized",
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await resp(scope, receive, send)
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def send_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())],
                }
            await send(message)

        await self.app(scope, receive, send_cookie)


def _model_info(model: Any) -> dict[str, Any]:
    val = model.card.metrics.get("validation") or {}
    return {
        "name": model.name,
        "threshold": model.threshold_value,
        "threshold_rule": model.card.threshold.rule if model.card.threshold else None,
        "attention": any(o.name == "lead_attention" for o in model.card.outputs),
        "validation_auroc": val.get("auroc"),
        "task": model.card.get("task"),
    }


def _client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_dashboard(
    settings: Settings,
    models: tuple[str, ...] | None = None,
    *,
    bootstrap: str | None = None,
    host: str | None = None,
) -> FastAPI:
    """The dashboard app over the model cards in ``settings.models_dir`` (loaded once, here): every
    12-lead reconstruction anomaly model (:func:`dashboard_models`), or those named in ``models``. With a
    Kafka ``bootstrap`` (default ``ECG_KAFKA_BOOTSTRAP``) and ``ECG_DASHBOARD_LIVE`` the live view reads it.
    ``host`` is where it will be bound: a non-loopback one needs ``ECG_DASHBOARD_TOKEN``
    (:class:`~stream.errors.ConfigError` otherwise)."""
    from models.runtime.anomaly12 import Anomaly12Model
    from models.runtime.lead_recon import LeadReconModel
    from stream.dashboard.livefeed import LiveFeed

    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    check_bind(host or settings.bind_host, token)
    offered = dashboard_models(settings.models_dir)
    wanted = offered if models is None else tuple(m for m in models if m in offered)
    loaded = {m: Anomaly12Model.load(m, settings.models_dir) for m in wanted}
    if not loaded:
        raise ModelError(
            f"no 12-lead anomaly model in {settings.models_dir} (looked for {list(models or offered)})"
        )
    lead_recon = (
        LeadReconModel.load("lead_recon", settings.models_dir)
        if (settings.models_dir / "lead_recon.onnx").is_file()
        else None
    )
    metrics = DashboardMetrics(tuple(loaded))
    limit = settings.dashboard_max_upload_bytes

    def alert_seen(msg: AlertMessage, now: float) -> None:
        if msg.published_at is not None and now >= msg.published_at:
            metrics.alert_delay.observe(now - msg.published_at)

    hub = LiveHub(
        stale_s=settings.dashboard_stale_s,
        forget_s=settings.dashboard_forget_s,
        queue_size=settings.dashboard_client_queue,
        on_alert=alert_seen,
    )
    metrics.watch(hub)
    bs = bootstrap if bootstrap is not None else settings.kafka_bootstrap
    feed = LiveFeed(settings, bs, hub) if (settings.dashboard_live and bs) else None
    uploads_rate = RateLimiter(settings.dashboard_uploads_per_minute)
    actions_rate = RateLimiter(settings.dashboard_actions_per_minute)
    slots = StreamSlots(settings.dashboard_max_streams, settings.dashboard_max_streams_per_client)
    analyses: OrderedDict[str, Analysis] = OrderedDict()
    analysing = asyncio.Semaphore(1)  # one upload scored at a time: the live view keeps its CPU

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if feed is not None:
            await feed.start()
        try:
            yield
        finally:
            if feed is not None:
                await feed.stop()

    app = FastAPI(
        title="ecg-monitor dashboard",
        description="Live central-station view and 12-lead ECG anomaly analysis",
        docs_url="/api/docs",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.hub = hub
    app.state.feed = feed
    if token:
        app.add_middleware(
            TokenGate, token=token, on_refuse=lambda: metrics.refused.labels("unauthorized").inc()
        )

    def reject(status: int, reason: str, message: str) -> JSONResponse:
        metrics.rejected.labels(reason).inc()
        log.info("upload refused (%s)", reason)  # the message may name the record: not logged
        return JSONResponse({"error": message, "reason": reason}, status_code=status)

    def refuse(
        status: int, reason: str, message: str, retry_after: int | None = None
    ) -> JSONResponse:
        metrics.refused.labels(reason).inc()
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse(
            {"error": message, "reason": reason}, status_code=status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def malformed_form(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return reject(422, "format", f"malformed request: {problems}")

    def page(name: str) -> FileResponse:
        return FileResponse(
            STATIC / name, media_type="text/html", headers={"Cache-Control": "no-store"}
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return page("index.html")

    @app.get("/ward", include_in_schema=False)
    async def ward() -> FileResponse:
        return page("ward.html")

    @app.get("/patient/{stream_id}", include_in_schema=False)
    async def patient(stream_id: str) -> FileResponse:
        return page("patient.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = STATIC / name
        if name not in STATIC_FILES or not path.is_file():
            return JSONResponse({"error": "not found", "reason": "not_found"}, status_code=404)
        return FileResponse(path, media_type=STATIC_FILES[name])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/models")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [_model_info(m) for m in loaded.values()],
            "default": next(iter(loaded)),
            "max_upload_bytes": limit,
            "max_samples": settings.dashboard_max_samples,
            "max_windows": settings.dashboard_max_windows,
            "lead_recon": lead_recon is not None,
        }

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/analyze", openapi_extra=_ANALYZE_FORM)
    async def analyze(request: Request) -> Any:
        t0 = time.perf_counter()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # refused before anything is read
            return reject(
                413, "too_large", f"upload of {int(declared)} bytes is over the {limit}-byte limit"
            )
        key = _client_key(request)
        if not uploads_rate.allow(key):
            return refuse(
                429,
                "rate_limited",
                f"at most {settings.dashboard_uploads_per_minute} uploads per minute; try again later",
                uploads_rate.retry_after(key),
            )
        try:
            form = await read_upload_form(request, limit)
            name = form.fields.get("model") or next(iter(loaded))
            if name not in loaded:
                raise UploadError(
                    "unknown_model", f"unknown model {name[:64]!r}; offered: {list(loaded)}"
                )
            fs_text = form.fields.get("fs", "").strip()
            try:
                fs = float(fs_text) if fs_text else None
            except ValueError as exc:
                raise UploadError(
                    "format", f"malformed request: fs: {fs_text[:64]!r} is not a number"
                ) from exc
            leads = [s.strip() for s in form.fields.get("leads", "").split(",") if s.strip()]
            try:
                upload = load_upload(
                    form.files,
                    fs,
                    leads or None,
                    settings.min_fs,
                    settings.max_fs,
                    settings.dashboard_max_samples,
                )
            except UploadError:
                raise
            except Exception as exc:  # a file no check foresaw: still the upload's fault, not a 500
                log.warning("unreadable upload (%s)", type(exc).__name__)
                raise UploadError("format", f"unreadable upload: {type(exc).__name__}") from exc
            async with analysing:
                result = await asyncio.to_thread(
                    analyse_arrays, upload, loaded[name], lead_recon, settings.dashboard_max_windows
                )
        except UploadError as exc:
            return reject(REJECT_STATUS.get(exc.reason, 422), exc.reason, str(exc))
        except ModelError as exc:
            return reject(422, "shape", str(exc))
        aid = secrets.token_urlsafe(12)
        analyses[aid] = result
        while len(analyses) > KEPT_ANALYSES:
            analyses.popitem(last=False)
        body = analysis_json(result, inline=INLINE_WINDOWS)
        body["analysis_id"] = aid
        metrics.analyses.labels(name).inc()
        metrics.duration.observe(time.perf_counter() - t0)
        return body

    @app.get("/api/analyses/{aid}/windows/{index}")
    async def analysis_window(aid: str, index: int) -> Any:
        a = analyses.get(aid)
        if a is None:
            return JSONResponse(
                {
                    "error": "this analysis is no longer kept; upload the record again",
                    "reason": "expired",
                },
                status_code=404,
            )
        if not 0 <= index < len(a.score):
            return JSONResponse(
                {"error": f"window {index} is not in 0..{len(a.score) - 1}", "reason": "window"},
                status_code=404,
            )
        return window_json(a, index)

    # ------------------------------------------------------------------------------------------ live
    @app.get("/api/live/status")
    async def live_status() -> dict[str, Any]:
        return {
            "live": feed is not None,
            "connected": bool(feed and feed.connected),
            "streams": len(hub.streams),
            "clients": len(hub.clients),
            "stale_s": settings.dashboard_stale_s,
            "now": time.time(),
        }

    @app.get("/api/live/events")
    async def live_events(
        request: Request, view: str = "ward", stream: str | None = None
    ) -> Response:
        if view not in VIEWS or (view == "patient" and not (stream and 0 < len(stream) <= 128)):
            return JSONResponse(
                {"error": "view must be ward, or patient with stream=<id>", "reason": "format"},
                status_code=422,
            )
        key = _client_key(request)
        if not slots.acquire(key):
            return refuse(
                429,
                "too_many_streams",
                f"at most {settings.dashboard_max_streams_per_client} live pages per client and "
                f"{settings.dashboard_max_streams} in all",
                5,
            )
        wake = asyncio.Event()
        client = hub.connect(view, stream if view == "patient" else None, notify=wake.set)
        metrics.live_clients.labels(view).inc()

        async def events() -> AsyncIterator[str]:
            try:
                yield f"retry: 2000\n: live={'on' if feed else 'off'}\n\n"
                while True:
                    wake.clear()
                    batch = hub.take(client, time.time())
                    if batch:
                        yield "".join(f"data: {e}\n\n" for e in batch)
                    try:
                        await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
            finally:
                hub.disconnect(client)
                slots.release(key)
                metrics.live_clients.labels(view).dec()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/live/alarms/{alert_id}/actions")
    async def alarm_action(alert_id: str, request: Request) -> Any:
        key = _client_key(request)
        if not actions_rate.allow(key):
            return refuse(429, "rate_limited", "too many alarm actions; try again later", 10)
        try:
            body = json.loads((await request.body())[:4096] or b"{}")
            action = str(body.get("action", ""))
            user = str(body.get("user", "")).strip()
            silence_s = float(body["silence_s"]) if body.get("silence_s") is not None else None
        except (ValueError, TypeError, AttributeError):
            return JSONResponse(
                {"error": "send JSON {action, user[, silence_s]}", "reason": "format"},
                status_code=422,
            )
        if action not in ("acknowledge", "silence"):
            return JSONResponse(
                {"error": "action must be acknowledge or silence", "reason": "format"},
                status_code=422,
            )
        if not (0 < len(user) <= 64 and user.isprintable()):
            return JSONResponse(
                {"error": "give who you are (1-64 printable characters)", "reason": "user"},
                status_code=422,
            )
        if action == "silence" and not (silence_s and 0 < silence_s <= 3600):
            silence_s = 120.0
        alarm = next(
            (a for s in hub.streams.values() for a in s.alarms if a["id"] == alert_id), None
        )
        if alarm is None:
            return JSONResponse(
                {"error": "unknown alarm", "reason": "unknown_alarm"}, status_code=404
            )
        if feed is None:
            return JSONResponse(
                {"error": "the live view has no Kafka connection", "reason": "no_broker"},
                status_code=503,
            )
        try:
            msg = await feed.publish_action(
                action=action,
                alert_id=alert_id,
                stream_id=alarm["stream_id"],
                kind=alarm["kind"],
                user=user,
                silence_s=silence_s if action == "silence" else None,
            )
        except Exception as exc:
            log.warning("alarm action not published (%s)", type(exc).__name__)
            return JSONResponse(
                {"error": f"not published: {type(exc).__name__}", "reason": "no_broker"},
                status_code=503,
            )
        metrics.actions.labels(action).inc()
        log.info("alarm action published: %s", action)
        return json.loads(msg.model_dump_json())

    return app


#: Files under static/ the dashboard serves, with their media types.
STATIC_FILES: dict[str, str] = {
    "ecg.js": "text/javascript",
    "live.js": "text/javascript",
    "ward.js": "text/javascript",
    "patient.js": "text/javascript",
    "dashboard.css": "text/css",
}


def serve_dashboard(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    bootstrap: str | None = None,
) -> None:
    """Serve the dashboard with uvicorn until interrupted (no access log: paths name patients)."""
    import uvicorn

    bind = host or settings.bind_host
    app = create_dashboard(settings, bootstrap=bootstrap, host=bind)
    uvicorn.run(
        app,
        host=bind,
        port=settings.dashboard_port if port is None else port,
        log_level="warning",
        access_log=False,
    )
