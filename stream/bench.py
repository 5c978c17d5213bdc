"""``ecg-monitor bench``: sustained throughput and end-to-end latency of N real-time patient streams.

One stack for all runs: embedded broker (unless ``ECG_KAFKA_BOOTSTRAP``), ``workers`` worker processes. Each run starts a
separate replay process publishing ``patients`` MIT-BIH streams (all 48 records, reused at offsets) at real
time, without faults, under a run-specific stream-id prefix. This process reads the beats topic, which holds
exactly one receipt per processed frame with ``sent_at`` and ``processed_at``; latency = ``processed_at -
sent_at`` (the same definition as ``ecg_end_to_end_latency_seconds{point="processed"}``).

Per run, over the ``seconds`` after ``warmup``: ``frames_per_s`` and ``samples_per_s`` processed, latency
percentiles, and ``realtime`` = at least 97 % of the offered frames processed in the window and p99 < 1 s.
``worker_cpu_ms_per_frame`` (worker CPU seconds per processed frame) does not depend on what else competes
for the cores: 1000 / it is the frames per second one fully available core sustains. Between runs the bench
waits for the consumer lag to return to zero. The figures reported are the medians over the runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from stream.broker import free_port
from stream.settings import Settings
from stream.stack import local_stack, scrape_metrics, spawn_cli, terminate, wait_for_metrics

#: Share of offered frames that must be processed inside the window for a run to count as real time.
REALTIME_SHARE = 0.97
#: p99 end-to-end latency bound of a real-time run (seconds).
REALTIME_P99_S = 1.0


class _BeatsCollector:
    """Background thread consuming the beats topic: per-prefix lists of (processed_at, latency, samples)."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.rows: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def take(self, prefix: str) -> list[tuple[float, float, int]]:
        with self._lock:
            return list(self.rows.get(prefix, []))

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from stream.broker import client_kwargs

        topic = self.settings.topics.beats
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, self.bootstrap),
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 << 20,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                rows = []
                for msgs in batch.values():
                    for m in msgs:
                        d = json.loads(m.value)
                        if d.get("latency_s") is None:
                            continue
                        rows.append(
                            (
                                d["stream_id"].split("-", 1)[0],
                                d["processed_at"],
                                d["latency_s"],
                                d["samples"],
                            )
                        )
                with self._lock:
                    for prefix, at, lat, n in rows:
                        self.rows[prefix].append((at, lat, n))
        finally:
            self._ready.set()
            await consumer.stop()


def _summarise(
    rows: list[tuple[float, float, int]], t0: float, seconds: float, patients: int, frame_s: float
) -> dict[str, Any]:
    window = [(at, lat, n) for at, lat, n in rows if t0 <= at < t0 + seconds]
    lat = np.array([r[1] for r in window]) if window else np.array([np.nan])
    frames_per_s = len(window) / seconds
    offered = patients / frame_s
    p99 = float(np.nanpercentile(lat, 99))
    return {
        "frames_per_s": round(frames_per_s, 1),
        "samples_per_s": round(sum(r[2] for r in window) / seconds, 1),
        "offered_frames_per_s": round(offered, 1),
        "p50_s": round(float(np.nanpercentile(lat, 50)), 4),
        "p99_s": round(p99, 4),
        "max_s": round(float(np.nanmax(lat)), 4),
        "realtime": bool(frames_per_s >= REALTIME_SHARE * offered and p99 < REALTIME_P99_S),
    }


def drain(ports: list[int], host: str = "127.0.0.1", timeout_s: float = 120.0) -> None:
    """Wait until every worker reports zero consumer lag (or ``timeout_s``)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        time.sleep(1.0)
        lag = 0.0
        for p in ports:
            m = scrape_metrics(host, p)
            lag += sum(v for k, v in m.items() if k.startswith("ecg_consumer_lag_messages{"))
        if lag == 0:
            return


def run_bench(
    settings: Settings,
    *,
    patients: int,
    runs: int = 3,
    seconds: float = 30.0,
    warmup: float = 10.0,
    progress: bool = True,
    records: tuple[str, ...] = ("mitdb",),
    workers: int = 1,
    models: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see module docs) and return the median figures plus every run."""
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    log_dir = Path(tempfile.mkdtemp(prefix="ecg-bench-"))
    port = free_port(settings.bind_host)  # workers use port, port + 1, ...
    per_run: list[dict[str, Any]] = []
    with local_stack(
        settings, log_dir=log_dir, metrics_port=port, replay=False, workers=workers, models=models
    ) as stack:
        bs = stack["bootstrap"]
        ports = stack["worker_ports"]
        for p, name in zip(
            ports, [n for n in stack["procs"] if n.startswith("worker")], strict=True
        ):
            wait_for_metrics(settings.bind_host, p, proc=stack["procs"][name])

        def cpu_seconds() -> float:
            return sum(
                scrape_metrics(settings.bind_host, p).get("process_cpu_seconds_total", 0.0)
                for p in ports
            )

        def stage_totals() -> dict[str, float]:
            """Summed ecg_stage_duration_seconds sum/count per stage over the workers."""
            tot: dict[str, float] = defaultdict(float)
            for p in ports:
                for k, v in scrape_metrics(settings.bind_host, p).items():
                    if k.startswith(
                        ("ecg_stage_duration_seconds_sum{", "ecg_stage_duration_seconds_count{")
                    ):
                        tot[k] += v
            return tot

        collector = _BeatsCollector(settings, bs)
        collector.start()
        env = {"ECG_KAFKA_BOOTSTRAP": bs, "ECG_DATA_DIR": str(Path(settings.data_dir).resolve())}
        try:
            for r in range(runs):
                prefix = f"bench{r}"
                console.print(
                    f"run {r + 1}/{runs}: {patients} streams, {warmup:g} s warm-up + {seconds:g} s"
                )
                cpu0, w0, st0 = cpu_seconds(), time.time(), stage_totals()
                replay = spawn_cli(
                    [
                        "replay",
                        "--bootstrap",
                        bs,
                        "--patients",
                        str(patients),
                        "--speed",
                        "1",
                        "--faults",
                        "none",
                        "--records",
                        ",".join(records),
                        "--prefix",
                        prefix,
                        "--metrics-port",
                        "-1",
                        "--duration",
                        str(warmup + seconds + 5),
                    ],
                    {**os.environ, **env},
                    log_dir / f"replay-{r}.log",
                )
                try:
                    # the window starts `warmup` s after the first processed frame of this run
                    deadline = time.time() + 120
                    while not collector.take(prefix) and time.time() < deadline:
                        if replay.poll() is not None:
                            raise RuntimeError(f"replay exited early; see {log_dir}/replay-{r}.log")
                        time.sleep(0.2)
                    first = min(at for at, _, _ in collector.take(prefix))
                    t_measure = first + warmup
                    while time.time() < t_measure + seconds + 3:
                        time.sleep(0.5)
                    cpu1, w1, st1 = cpu_seconds(), time.time(), stage_totals()
                finally:
                    terminate(replay)
                res = _summarise(
                    collector.take(prefix), t_measure, seconds, patients, settings.frame_seconds
                )
                res["load_average_1m"] = round(os.getloadavg()[0], 2)
                res["worker_cpu_share"] = round((cpu1 - cpu0) / (w1 - w0), 3)
                # CPU cost per frame does not depend on what else competes for the cores
                frames_in_cpu_window = sum(
                    1 for at, _, _ in collector.take(prefix) if w0 <= at < w1
                )
                res["worker_cpu_ms_per_frame"] = round(
                    1000 * (cpu1 - cpu0) / max(1, frames_in_cpu_window), 3
                )
                stages = sorted({k.split('stage="')[1].rstrip('"}') for k in st1})
                res["stage_ms_per_frame"] = {
                    st: round(
                        1000
                        * (
                            st1[f'ecg_stage_duration_seconds_sum{{stage="{st}"}}']
                            - st0.get(f'ecg_stage_duration_seconds_sum{{stage="{st}"}}', 0.0)
                        )
                        / max(
                            1.0,
                            st1[f'ecg_stage_duration_seconds_count{{stage="{st}"}}']
                            - st0.get(f'ecg_stage_duration_seconds_count{{stage="{st}"}}', 0.0),
                        ),
                        4,
                    )
                    for st in stages
                }
                per_run.append(res)
                console.print(f"  {res}")
                drain(ports)  # a backlog left by this run must not count against the next one
        finally:
            collector.stop()
    keys = ("frames_per_s", "samples_per_s", "p50_s", "p99_s", "worker_cpu_ms_per_frame")
    result: dict[str, Any] = {
        "patients": patients,
        "workers": workers,
        "models": models,
        "runs": runs,
        "seconds_per_run": seconds,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    for k in keys:
        result[k] = statistics.median(run[k] for run in per_run)
    result["realtime"] = bool(sum(run["realtime"] for run in per_run) * 2 > runs)
    stage_names = sorted({st for run in per_run for st in run["stage_ms_per_frame"]})
    result["stage_ms_per_frame"] = {
        st: statistics.median(run["stage_ms_per_frame"].get(st, 0.0) for run in per_run)
        for st in stage_names
    }
    result["per_run"] = per_run
    return result


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux /proc), None when it is gone."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def run_soak(
    settings: Settings,
    *,
    patients: int,
    minutes: int,
    models: str | None = None,
    records: tuple[str, ...] = ("mitdb",),
    progress: bool = True,
) -> dict[str, Any]:
    """``patients`` real-time streams for ``minutes`` on the local stack; per minute: broker and worker RSS,
    frames processed per second and the p99 end-to-end latency of that minute's frames. The verdict (from
    10 minutes on): RSS growth after the first 5 minutes under 10 % for broker and worker, and the p99 of
    the last 5 minutes within 1.5x of the first 5."""
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    log_dir = Path(tempfile.mkdtemp(prefix="ecg-soak-"))
    port = free_port(settings.bind_host)
    rows: list[dict[str, Any]] = []
    with local_stack(
        settings, log_dir=log_dir, metrics_port=port, replay=False, workers=1, models=models
    ) as stack:
        bs = stack["bootstrap"]
        worker = stack["procs"]["worker"]
        wait_for_metrics(settings.bind_host, port, proc=worker)
        broker = stack.get("broker")
        broker_proc = broker.process if broker is not None else None
        collector = _BeatsCollector(settings, bs)
        collector.start()
        env = {"ECG_KAFKA_BOOTSTRAP": bs, "ECG_DATA_DIR": str(Path(settings.data_dir).resolve())}
        replay = spawn_cli(
            [
                "replay",
                "--bootstrap",
                bs,
                "--patients",
                str(patients),
                "--speed",
                "1",
                "--faults",
                "none",
                "--loop",
                "--records",
                ",".join(records),
                "--prefix",
                "soak",
                "--metrics-port",
                "-1",
                "--duration",
                str(minutes * 60 + 30),
            ],
            {**os.environ, **env},
            log_dir / "replay.log",
        )
        try:
            start = time.time()
            for minute in range(1, minutes + 1):
                end = start + 60 * minute
                while time.time() < end:
                    if replay.poll() is not None or worker.poll() is not None:
                        raise RuntimeError(f"the replay or the worker exited; logs in {log_dir}")
                    time.sleep(1.0)
                window = [r for r in collector.take("soak") if end - 60 <= r[0] < end]
                lat = [r[1] for r in window]
                row = {
                    "minute": minute,
                    "frames_per_s": round(len(window) / 60, 1),
                    "p99_s": round(float(np.percentile(lat, 99)), 4) if lat else None,
                    "broker_rss_mb": rss_mb(broker_proc.pid if broker_proc else None),
                    "worker_rss_mb": rss_mb(worker.pid),
                }
                rows.append(row)
                console.print(
                    f"minute {minute:3d}: {row['frames_per_s']:7.1f} frames/s  p99 {row['p99_s']} s  "
                    f"broker RSS {row['broker_rss_mb']} MB  worker RSS {row['worker_rss_mb']} MB"
                )
        finally:
            terminate(replay)
            collector.stop()
    return {"patients": patients, "minutes": minutes, "per_minute": rows, **soak_verdict(rows)}


def soak_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth of broker and worker RSS after the first 5 minutes and the p99 drift (last 5 vs first 5
    minutes, medians of the per-minute p99); ``held`` when both stay in bounds (needs >= 10 minutes)."""
    if len(rows) < 10:
        return {"held": None, "why": "a verdict needs at least 10 minutes"}

    def growth(key: str) -> float | None:
        a, b = rows[4][key], rows[-1][key]
        return None if a is None or b is None else round((b - a) / a, 4)

    def med(part: list[dict[str, Any]]) -> float | None:
        vals = [r["p99_s"] for r in part if r["p99_s"] is not None]
        return float(np.median(vals)) if vals else None

    first, last = med(rows[:5]), med(rows[-5:])
    drift = None if not first or last is None else round(last / first, 3)
    g_broker, g_worker = growth("broker_rss_mb"), growth("worker_rss_mb")
    held = (
        all(g is not None and g < 0.10 for g in (g_broker, g_worker))
        and drift is not None
        and drift <= 1.5
    )
    return {
        "broker_rss_growth_after_5_min": g_broker,
        "worker_rss_growth_after_5_min": g_worker,
        "p99_last5_over_first5": drift,
        "held": held,
    }
