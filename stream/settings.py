"""One typed settings object for every ecg-monitor process (env prefix ``ECG_``).

Build it at start-up with :func:`get_settings` (or ``Settings()``), never at import.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.stages.alarms import AlarmConfig

#: Default records of ``ecg-monitor up`` and ``ecg-monitor replay`` (paths relative to ``data_dir``): MIT-BIH
#: patients with arrhythmias (119 ventricular bigeminy, 201 and 203 atrial fibrillation and ventricular
#: runs, 207 ventricular flutter and runs, 208 couplets and frequent PVCs) and two 12-lead PTB-XL patients
#: the 12-lead anomaly model flags (00180: complete left bundle branch block; 01405: anteroseptal
#: infarction), so every model and alarm kind runs in the main job.
DEMO_RECORDS: tuple[str, ...] = (
    "mitdb/119",
    "mitdb/201",
    "mitdb/203",
    "mitdb/207",
    "mitdb/208",
    "ptbxl/records100/00000/00180_lr",
    "ptbxl/records100/01000/01405_lr",
)


class TopicNames(BaseSettings):
    """Kafka topic names (env ``ECG_TOPIC_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="ECG_TOPIC_", frozen=True)

    telemetry: str = "ecg.telemetry.v1"
    dead_letter: str = "ecg.telemetry.dlq.v1"
    alerts: str = "ecg.alerts.v1"
    dropouts: str = "ecg.dropouts.v1"
    beats: str = "ecg.beats.v1"
    ground_truth: str = "ecg.faults.truth.v1"
    scores: str = "ecg.scores.v1"
    alarm_actions: str = "ecg.alarm-actions.v1"
    recovered: str = "ecg.recovered.v1"


class Settings(BaseSettings):
    """Runtime settings; every field reads ``ECG_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="ECG_", env_file=".env", extra="ignore", frozen=True
    )

    # Kafka
    kafka_bootstrap: str = Field(
        "", description="Kafka bootstrap servers; empty starts the embedded local broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    partitions: int = Field(
        4, ge=1, description="Partitions of the pipeline's topics when they are created."
    )
    replication_factor: int = Field(1, ge=1)
    local_broker_port: int = Field(
        0, ge=0, le=65535, description="Port of the embedded broker; 0 picks a free one."
    )
    consumer_group: str = "ecg-monitor"

    # data
    data_dir: Path = Field(
        Path("../shared/data"),
        description="Root holding mitdb/, nstdb/, ludb/, ptbxl/ (WFDB layout). The default, relative to "
        "the repository root, is the one of the Makefile, .ci/run, the tests and deploy/ (/data in the image).",
    )
    cache_dir: Path = Field(
        Path(".cache/ecg-monitor"), description="Prepared datasets and run outputs."
    )
    demo_records: tuple[str, ...] = Field(
        DEMO_RECORDS,
        description="Records replayed by `ecg-monitor up` and `replay` without --records (JSON list in the env).",
    )

    # stream
    frame_seconds: float = Field(1.0, gt=0, le=10, description="Duration of one telemetry frame.")
    max_frame_bytes: int = Field(
        1_000_000, gt=0, description="Frames larger than this go to the dead-letter topic."
    )
    fetch_max_wait_ms: int = Field(
        200,
        ge=1,
        le=1500,
        description="Longest time a worker's fetch waits for telemetry (ms). Apache Kafka answers as soon "
        "as data is there; the embedded broker holds every fetch this long, so there it adds up to this "
        "much latency and saves broker CPU (200 ms holds long runs far longer than 20 ms).",
    )
    producer_linger_ms: int = Field(
        20,
        ge=0,
        le=1000,
        description="How long a worker batches its output messages per partition before sending (ms).",
    )
    replay_linger_ms: int = Field(
        50,
        ge=0,
        le=1000,
        description="How long the replay batches frames before sending (ms). Fewer, larger produce requests: "
        "the embedded broker's CPU per frame fell 3x from 5 ms to 50 ms, for about 25 ms more latency.",
    )
    min_fs: float = 50.0
    max_fs: float = 2000.0
    max_seq_jump: int = Field(
        3600,
        ge=1,
        description="A frame whose seq jumps further ahead of its stream's is quarantined, not applied.",
    )
    max_time_jump_s: float = Field(
        3600.0,
        gt=0,
        description="A frame starting this much later than its stream's clock is quarantined.",
    )
    resync_frames: int = Field(
        3,
        ge=1,
        le=100,
        description="Consecutive frames that confirm a quarantined jump (or a backwards run): the stream "
        "then resynchronises to them as a new session.",
    )

    # servers
    bind_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)
    models_dir: Path = Field(Path(__file__).resolve().parent.parent / "models" / "artifacts")

    # dashboard (ecg-monitor dashboard)
    dashboard_port: int = Field(
        8050, ge=0, le=65535, description="Port of the 12-lead anomaly dashboard."
    )
    dashboard_max_upload_bytes: int = Field(
        20_000_000, gt=0, description="Uploads larger than this are refused (413)."
    )
    dashboard_max_samples: int = Field(
        7_200_000,
        gt=0,
        description="Uploads declaring more decoded samples (all signals, all frames) than this are "
        "refused (413) before anything is decoded; the default is 12 leads x 10 min at 1 kHz.",
    )
    dashboard_max_windows: int = Field(
        360,
        ge=1,
        le=360,
        description="10 s windows analysed per upload (the whole record up to this many: 1 h).",
    )
    dashboard_token: SecretStr | None = Field(
        None,
        description="Access token of the dashboard (Authorization: Bearer, cookie or ?token=); required "
        "on every route but /healthz when set, and the dashboard refuses to bind a non-loopback address "
        "without one.",
    )
    dashboard_live: bool = Field(
        True, description="Serve the live central-station view (needs a Kafka bootstrap)."
    )
    dashboard_consumer_group: str = Field(
        "ecg-monitor-dashboard",
        description="Consumer group id of the live view's Kafka consumer (it reads every partition: each "
        "dashboard process fans out every stream).",
    )
    dashboard_stale_s: float = Field(
        10.0, gt=0, description="A stream silent this long (wall clock) is greyed out."
    )
    dashboard_forget_s: float = Field(
        600.0, gt=0, description="A stream silent this long leaves the ward view."
    )
    dashboard_ward_hz: float = Field(
        5.0, ge=1, le=20, description="Ward-view updates per second (waveforms, heart rates)."
    )
    dashboard_client_queue: int = Field(
        512,
        ge=16,
        description="Events queued per browser; past it the oldest are dropped (and a full snapshot "
        "is sent when it reads again).",
    )
    dashboard_max_streams: int = Field(
        64, ge=1, description="Live event streams (browser pages) open at once, all clients."
    )
    dashboard_max_streams_per_client: int = Field(
        8, ge=1, description="Live event streams open at once from one client address."
    )
    dashboard_uploads_per_minute: int = Field(
        12, ge=1, description="Uploads analysed per client address per minute (429 past it)."
    )
    dashboard_actions_per_minute: int = Field(
        60, ge=1, description="Acknowledge/silence actions per client address per minute."
    )

    topics: TopicNames = Field(default_factory=TopicNames)
    alarms: AlarmConfig = Field(
        default_factory=AlarmConfig,
        description="Rates, counts, durations and thresholds of the arrhythmia and model alarms "
        "(stream.stages.alarms.AlarmConfig); env ECG_ALARMS as JSON, e.g. "
        "'{\"pvc_per_min\": 12}'.",
    )

    @property
    def local_mode(self) -> bool:
        """True when no bootstrap is configured and the embedded broker is used."""
        return not self.kafka_bootstrap.strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings built once per process, at start-up."""
    return Settings()
