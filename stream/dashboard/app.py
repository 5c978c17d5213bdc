"""The 12-lead anomaly dashboard (FastAPI): upload an ECG, pick a model, see where and in which lead.

``create_dashboard(settings)`` builds the app; ``ecg-monitor dashboard`` serves it with uvicorn. It is a
separate process from the stream workers (a browser upload must never stall a Kafka partition) and, like
them, imports ONNX Runtime and never torch.

Routes:

- ``GET /``: the page (``static/index.html``, self-contained: no CDN, so it works offline);
- ``GET /api/models``: the offered models with their thresholds and validation figures;
- ``POST /api/analyze``: multipart form with ``files`` (one ``.npy``, or a WFDB ``.hea`` with its signal
  files), ``model``, and for ``.npy`` ``fs`` and optionally ``leads`` (comma-separated names). Answers
  the JSON of :func:`stream.dashboard.analysis.analyse`, or 4xx ``{"error", "reason"}``: 413 for an upload
  over ``ECG_DASHBOARD_MAX_UPLOAD_BYTES`` (refused by its declared length, or as soon as that many bytes
  of a chunked body came: :mod:`stream.dashboard.form`) or declaring more decoded samples than
  ``ECG_DASHBOARD_MAX_SAMPLES`` (:mod:`stream.dashboard.uploads`), 400 for a bad file name, 422 for bad
  input;
- ``GET /metrics``: ``ecg_dashboard_analyses_total{model}``,
  ``ecg_dashboard_rejected_uploads_total{reason}``, ``ecg_dashboard_analysis_duration_seconds``;
- ``GET /healthz``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from stream.dashboard.analysis import analyse, dashboard_models, load_upload
from stream.dashboard.form import FILES_FIELD, read_upload_form
from stream.dashboard.uploads import REJECT_REASONS, REJECT_STATUS, UploadError
from stream.errors import ModelError
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
        for m in models:
            self.analyses.labels(m)
        for r in REJECT_REASONS:
            self.rejected.labels(r)


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


def create_dashboard(settings: Settings, models: tuple[str, ...] | None = None) -> FastAPI:
    """The dashboard app over the model cards in ``settings.models_dir`` (loaded once, here): every
    12-lead reconstruction anomaly model (:func:`dashboard_models`), or those named in ``models``."""
    from models.runtime.anomaly12 import Anomaly12Model
    from models.runtime.lead_recon import LeadReconModel

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
    app = FastAPI(
        title="ecg-monitor dashboard",
        description="12-lead ECG anomaly analysis",
        docs_url="/api/docs",
    )
    app.state.metrics = metrics

    def reject(status: int, reason: str, message: str) -> JSONResponse:
        metrics.rejected.labels(reason).inc()
        log.info("upload refused (%s): %s", reason, message)
        return JSONResponse({"error": message, "reason": reason}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def malformed_form(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return reject(422, "format", f"malformed request: {problems}")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

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
                log.warning("unreadable upload", exc_info=True)
                raise UploadError("format", f"unreadable upload: {type(exc).__name__}") from exc
            result = analyse(upload, loaded[name], lead_recon, settings.dashboard_max_windows)
        except UploadError as exc:
            return reject(REJECT_STATUS.get(exc.reason, 422), exc.reason, str(exc))
        except ModelError as exc:
            return reject(422, "shape", str(exc))
        metrics.analyses.labels(name).inc()
        metrics.duration.observe(time.perf_counter() - t0)
        return result

    return app


def serve_dashboard(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve the dashboard with uvicorn until interrupted."""
    import uvicorn

    app = create_dashboard(settings)
    uvicorn.run(
        app,
        host=host or settings.bind_host,
        port=settings.dashboard_port if port is None else port,
        log_level="warning",
    )
