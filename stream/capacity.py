"""Sizing a deployment from a measured per-frame cost: workers and partitions for a ward of K patients.

A worker is one single-threaded Python process (one core at most); one stream is always on one partition
(the topics are keyed by stream id), so a consumer group of W workers needs at least W partitions, and the
partition count fixes how far the group can scale without re-keying streams (adding partitions later moves
streams to other partitions, where their state starts afresh). The cost per frame comes from
``ecg-monitor bench`` (``worker_cpu_ms_per_frame``: worker CPU seconds per processed frame, with the models
the deployment scores); it does not depend on how busy the measuring machine was.

The plan keeps each worker at ``utilisation`` of its core (default 0.6): bursts (a reconnecting ward
replaying its backlog, a rebalance handing over partitions, scoring batches) need the rest to keep the p99
latency under a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Default share of a core a worker is planned to use (the rest absorbs bursts and rebalances).
DEFAULT_UTILISATION = 0.6
#: Partitions per planned worker: room to scale the group out (x4) without re-keying streams.
PARTITIONS_PER_WORKER = 4


@dataclass(frozen=True)
class CapacityPlan:
    """Workers and partitions for ``patients`` streams at ``cpu_ms_per_frame``."""

    patients: int
    frame_s: float
    cpu_ms_per_frame: float
    utilisation: float
    frames_per_s: float
    cores_busy: float
    streams_per_worker: int
    workers: int
    partitions: int
    messages_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_capacity(
    patients: int,
    cpu_ms_per_frame: float,
    *,
    frame_s: float = 1.0,
    utilisation: float = DEFAULT_UTILISATION,
    partitions_per_worker: int = PARTITIONS_PER_WORKER,
    outputs_per_frame: float = 2.0,
) -> CapacityPlan:
    """The plan for ``patients`` real-time streams of ``frame_s`` frames costing ``cpu_ms_per_frame`` of
    worker CPU each. ``outputs_per_frame``: messages the pipeline publishes per frame (one receipt on
    the beats topic, plus scores, alerts and dropouts; ``ecg-monitor bench`` measured 1.99 with every beat
    model), which with the frame itself gives the broker's message rate."""
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if not (cpu_ms_per_frame > 0 and math.isfinite(cpu_ms_per_frame)):
        raise ValueError(f"cpu_ms_per_frame must be a positive number, got {cpu_ms_per_frame}")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
    if frame_s <= 0:
        raise ValueError(f"frame_s must be positive, got {frame_s}")
    frames_per_s = patients / frame_s
    cores = frames_per_s * cpu_ms_per_frame / 1000.0
    per_worker = max(1, math.floor(utilisation * 1000.0 * frame_s / cpu_ms_per_frame))
    workers = math.ceil(patients / per_worker)
    partitions = max(1, workers * partitions_per_worker)
    return CapacityPlan(
        patients=patients,
        frame_s=frame_s,
        cpu_ms_per_frame=cpu_ms_per_frame,
        utilisation=utilisation,
        frames_per_s=round(frames_per_s, 1),
        cores_busy=round(cores, 2),
        streams_per_worker=per_worker,
        workers=workers,
        partitions=partitions,
        messages_per_s=round(frames_per_s * (1.0 + outputs_per_frame), 1),
    )


__all__ = ["DEFAULT_UTILISATION", "PARTITIONS_PER_WORKER", "CapacityPlan", "plan_capacity"]
