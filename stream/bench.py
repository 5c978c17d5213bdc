"""``ecg-monitor bench``: sustained throughput, end-to-end latency and CPU cost of N real-time patient streams.

One stack for all runs: embedded broker (unless ``ECG_KAFKA_BOOTSTRAP``), ``workers`` worker processes. Each run starts a
separate replay process publishing ``patients`` streams at real time (looping), without faults, under a run-specific
stream-id prefix. ``records`` picks the streams (:data:`RECORD_SETS`): ``mitdb`` (MIT-BIH, 360 Hz, 2 leads, all 48
records reused at offsets), ``ptbxl`` (PTB-XL records100, 100 Hz, 12 leads) or ``ludb`` (LUDB, 500 Hz, 12 leads).
This process reads the beats topic, which holds exactly one receipt per processed frame with ``sent_at`` and
``processed_at``; latency = ``processed_at - sent_at`` (the same definition as
``ecg_end_to_end_latency_seconds{point="processed"}``).

Per run, over the ``seconds`` after ``warmup`` (counted from the run's first processed frame): ``frames_per_s``,
``samples_per_s`` (per lead) and ``lead_samples_per_s`` (all leads) processed, latency percentiles, and ``realtime`` =
at least 97 % of the offered frames processed in the window and p99 < 1 s. Frames differ in size between the record
sets (``fs_hz`` x ``leads`` samples a second), so beside ``worker_cpu_ms_per_frame`` (worker CPU seconds per processed
frame, over the same window) the bench reports ``worker_cpu_us_per_lead_sample``. CPU per frame does not depend on what
else competes for the cores: 1000 / it is the frames per second one fully available core sustains.

Beside the worker: the embedded broker's CPU (``/proc/<pid>/stat`` utime + stime over the window) as
``broker_cpu_share`` (CPU seconds per wall second) and ``broker_cpu_ms_per_frame``, the RSS of broker, workers and
replay, and the replay's CPU; the broker figures are null with an external broker (``ECG_KAFKA_BOOTSTRAP`` set).

Pass-through reference: after each run (once the workers have drained it), a plain aiokafka consumer + producer in a
separate process (no consumer group: it assigns every partition) reads exactly that run's frames from the telemetry
topic and produces each unchanged to ``<telemetry>.bench-passthrough``, as fast as it can, for at most
:data:`PASSTHROUGH_MAX_S` seconds. It reports ``passthrough_frames_per_s`` (wall) and ``passthrough_cpu_ms_per_frame``
(its process CPU per frame), and ``pipeline_to_passthrough_ratio`` = ``passthrough_cpu_ms_per_frame /
worker_cpu_ms_per_frame``, i.e. pipeline frames per CPU-second over pass-through frames per CPU-second (1 = the
pipeline costs no more than moving the frames; 0.1 = it costs ten times as much).

Between runs the bench waits for the consumer lag to return to zero. The figures reported are the medians over the
runs. With ``minutes``: one long run instead, reported minute by minute (:func:`run_minutes`, shared with ``ecg-monitor
soak``); the headline figures are those of the last minute, and ``held`` = every minute after the first was real time.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
#: Record sets of ``--records``: database dirs relative to ``ECG_DATA_DIR``.
RECORD_SETS: dict[str, tuple[str, ...]] = {
    "mitdb": ("mitdb",),
    "ptbxl": ("ptbxl/records100/00000", "ptbxl/records100/01000"),  # about 1,800 records at 100 Hz
    "ludb": ("ludb/data",),  # 200 records at 500 Hz
}
#: Longest wall time of one pass-through measurement (seconds).
PASSTHROUGH_MAX_S = 60.0
#: Suffix of the pass-through's scratch topic (after the telemetry topic's name).
PASSTHROUGH_SUFFIX = ".bench-passthrough"
#: How the pass-through ratio is defined (also in every result).
RATIO_DEFINITION = (
    "passthrough_cpu_ms_per_frame / worker_cpu_ms_per_frame = pipeline frames per CPU-second over plain "
    "aiokafka pass-through (consume + produce unchanged) frames per CPU-second, same frames"
)
#: Figures reported as medians over the runs.
MEDIAN_KEYS = (
    "frames_per_s",
    "samples_per_s",
    "lead_samples_per_s",
    "p50_s",
    "p99_s",
    "worker_cpu_ms_per_frame",
    "worker_cpu_us_per_lead_sample",
    "outputs_per_frame",
    "worker_cpu_share",
    "worker_rss_mb",
    "broker_cpu_share",
    "broker_cpu_ms_per_frame",
    "broker_rss_mb",
    "replay_cpu_ms_per_frame",
    "passthrough_frames_per_s",
    "passthrough_cpu_ms_per_frame",
    "pipeline_to_passthrough_ratio",
)


def record_set(name: str) -> tuple[str, ...]:
    """The database dirs of a ``--records`` name; ValueError for an unknown one."""
    try:
        return RECORD_SETS[name]
    except KeyError:
        raise ValueError(
            f"unknown record set {name!r}; choose from {', '.join(RECORD_SETS)}"
        ) from None


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


# ----------------------------------------------------------------------------------------- pure figures
def parse_proc_stat_cpu(stat: str, clk_tck: int) -> float:
    """CPU seconds (utime + stime) from the text of ``/proc/<pid>/stat`` at ``clk_tck`` ticks a second."""
    fields = stat.rsplit(")", 1)[1].split()  # fields from 3 (state) on; the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / clk_tck


def proc_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds process ``pid`` has used (Linux /proc), None when it is gone or unknown."""
    if pid is None:
        return None
    try:
        return parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError):
        return None


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


#: Key of the workers' summed acknowledged output messages in a :class:`Snapshot`'s counters.
OUTPUTS_KEY = "ecg_output_messages_total"


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    return (
        None
        if not values or any(v is None for v in values)
        else float(sum(v or 0.0 for v in values))
    )


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of the stack at wall time ``t``: CPU seconds of the workers (summed), the broker
    and the replay (None when not measurable), RSS in MB, and the workers' summed stage duration sums/counts
    (and acknowledged output messages, under :data:`OUTPUTS_KEY`)."""

    t: float
    worker_cpu_s: float | None
    broker_cpu_s: float | None = None
    replay_cpu_s: float | None = None
    worker_rss_mb: float | None = None
    broker_rss_mb: float | None = None
    replay_rss_mb: float | None = None
    stages: dict[str, float] = field(default_factory=dict)


def _per(delta: float | None, n: float, scale: float, digits: int = 3) -> float | None:
    return None if delta is None or n <= 0 else round(scale * delta / n, digits)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def cpu_figures(a: Snapshot, b: Snapshot, frames: int, lead_samples: int) -> dict[str, Any]:
    """CPU shares (CPU seconds per wall second) and CPU per processed frame of workers, broker and replay
    between snapshots ``a`` and ``b``, with ``frames`` frames (``lead_samples`` samples, all leads) processed."""
    wall = b.t - a.t
    out: dict[str, Any] = {}
    for who in ("worker", "broker", "replay"):
        d = _delta(getattr(a, f"{who}_cpu_s"), getattr(b, f"{who}_cpu_s"))
        out[f"{who}_cpu_share"] = _per(d, wall, 1.0)
        out[f"{who}_cpu_ms_per_frame"] = _per(d, frames, 1000.0)
    d = _delta(a.worker_cpu_s, b.worker_cpu_s)
    out["worker_cpu_us_per_lead_sample"] = _per(d, lead_samples, 1e6, 4)
    out["worker_rss_mb"], out["broker_rss_mb"] = b.worker_rss_mb, b.broker_rss_mb
    out["replay_rss_mb"] = b.replay_rss_mb
    out["stage_ms_per_frame"] = stage_ms_per_frame(a.stages, b.stages)
    outputs = b.stages.get(OUTPUTS_KEY, 0.0) - a.stages.get(OUTPUTS_KEY, 0.0)
    out["outputs_per_frame"] = _per(outputs, frames, 1.0)
    return out


def stage_ms_per_frame(st0: dict[str, float], st1: dict[str, float]) -> dict[str, float]:
    """Mean ms per frame of each stage between two summed ``ecg_stage_duration_seconds`` sum/count scrapes."""
    out = {}
    for k in sorted(st1):
        if not k.startswith("ecg_stage_duration_seconds_sum{"):
            continue
        stage = k.split('stage="')[1].rstrip('"}')
        count_key = k.replace("_sum{", "_count{")
        n = st1.get(count_key, 0.0) - st0.get(count_key, 0.0)
        out[stage] = round(1000 * (st1[k] - st0.get(k, 0.0)) / max(1.0, n), 4)
    return out


def summarise_window(
    rows: Sequence[tuple[float, float, int]],
    t0: float,
    seconds: float,
    patients: int,
    frame_s: float,
    leads: float = 1.0,
) -> dict[str, Any]:
    """Throughput and latency of the receipts (processed_at, latency, samples per lead) processed in
    ``[t0, t0 + seconds)``, against ``patients`` streams offering one frame every ``frame_s`` seconds."""
    window = [(at, lat, n) for at, lat, n in rows if t0 <= at < t0 + seconds]
    lat = np.array([r[1] for r in window])
    frames_per_s = len(window) / seconds
    samples = sum(r[2] for r in window)
    offered = patients / frame_s
    p50, p99, top = (
        (round(float(np.percentile(lat, q)), 4) for q in (50, 99, 100))
        if window
        else (None, None, None)
    )
    return {
        "frames": len(window),
        "frames_per_s": round(frames_per_s, 1),
        "samples_per_s": round(samples / seconds, 1),
        "lead_samples_per_s": round(samples * leads / seconds, 1),
        "samples_per_frame": round(samples / len(window), 1) if window else None,
        "offered_frames_per_s": round(offered, 1),
        "p50_s": p50,
        "p99_s": p99,
        "max_s": top,
        "realtime": bool(
            frames_per_s >= REALTIME_SHARE * offered and p99 is not None and p99 < REALTIME_P99_S
        ),
    }


def passthrough_ratio(
    passthrough_cpu_ms_per_frame: float | None, worker_cpu_ms_per_frame: float | None
) -> float | None:
    """Pipeline frames per CPU-second over pass-through frames per CPU-second (:data:`RATIO_DEFINITION`)."""
    if not passthrough_cpu_ms_per_frame or not worker_cpu_ms_per_frame:
        return None
    return round(passthrough_cpu_ms_per_frame / worker_cpu_ms_per_frame, 4)


def minute_verdict(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``held`` = every minute after the first was real time (the only one when there is one minute);
    ``minutes_not_realtime`` lists the minutes that were not."""
    judged = rows[1:] if len(rows) > 1 else rows
    missed = [r["minute"] for r in judged if not r.get("realtime")]
    return {"held": bool(judged) and not missed, "minutes_not_realtime": missed}


def median_or_none(values: Sequence[Any]) -> Any:
    """Median of the non-None values, None when there is none."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


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


def stream_shape(
    records: Sequence[str], data_dir: str | Path, patients: int, frame_s: float
) -> dict[str, Any]:
    """Mean sampling rate, leads and lead samples per frame over the ``patients`` streams a replay of
    ``records`` plays (streams cycle through the records; headers only)."""
    import wfdb

    from stream.records import resolve_record_specs

    sources = resolve_record_specs(records, data_dir)
    used = [sources[i % len(sources)][1] for i in range(patients)]
    heads: dict[Path, tuple[float, int]] = {}
    for path in set(used):
        h = wfdb.rdheader(str(path))
        heads[path] = (float(h.fs), int(h.n_sig))
    fs = float(np.mean([heads[p][0] for p in used]))
    leads = float(np.mean([heads[p][1] for p in used]))
    return {
        "record_dirs": list(records),
        "distinct_records": len(heads),
        "fs_hz": round(fs, 1),
        "leads": round(leads, 2),
        "lead_samples_per_frame": round(
            float(np.mean([np.prod(heads[p]) for p in used])) * frame_s, 1
        ),
    }


# ------------------------------------------------------------------------------------------ pass-through
async def _passthrough(
    settings: Settings,
    bootstrap: str,
    prefix: str,
    start_offsets: dict[int, int],
    max_frames: int,
    max_s: float,
    idle_s: float = 3.0,
) -> dict[str, Any]:
    """Consume the telemetry frames keyed ``<prefix>-...`` from ``start_offsets`` and produce each unchanged to
    the scratch topic, as fast as possible; stop at ``max_frames``, when caught up, after ``idle_s`` without
    frames or after ``max_s``. Returns frames, wall seconds (first frame read to last produce acknowledged) and
    this process's CPU seconds meanwhile."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from stream.broker import client_kwargs

    kw = client_kwargs(settings, bootstrap)
    topic = settings.topics.telemetry
    scratch = topic + PASSTHROUGH_SUFFIX
    key_prefix = f"{prefix}-".encode()
    consumer = AIOKafkaConsumer(
        **kw, group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    producer = AIOKafkaProducer(**kw)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start_offsets)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start_offsets[tp.partition])
        frames = nbytes = skipped = 0
        t_start = time.monotonic()
        t_first: float | None = None
        t_last = t_start
        cpu0 = time.process_time()
        while frames < max_frames and time.monotonic() - t_start < max_s:
            batch = await consumer.getmany(timeout_ms=250, max_records=2000)
            futs = []
            for msgs in batch.values():
                for m in msgs:
                    if not (m.key or b"").startswith(key_prefix):
                        skipped += 1
                        continue
                    if t_first is None:
                        t_first = time.monotonic()
                    futs.append(await producer.send(scratch, value=m.value, key=m.key))
                    frames += 1
                    nbytes += len(m.value or b"")
            if futs:
                await asyncio.gather(*futs)
                t_last = time.monotonic()
                continue
            caught_up = True
            for tp in tps:
                hw = consumer.highwater(tp)
                caught_up = caught_up and hw is not None and await consumer.position(tp) >= hw
            if (caught_up and frames) or time.monotonic() - max(t_last, t_start) > idle_s:
                break
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
        await producer.stop()
    wall = t_last - t_first if t_first is not None else 0.0
    return {
        "frames": frames,
        "skipped": skipped,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 4),
        "frame_bytes_mean": round(nbytes / frames, 1) if frames else None,
        "bounded": frames < max_frames and time.monotonic() - t_start >= max_s,
    }


def passthrough_main() -> None:
    """Entry of the pass-through child process: arguments as one JSON object in argv[1], result as JSON on
    stdout (``python -c 'from stream.bench import passthrough_main; passthrough_main()' ARGS``)."""
    args = json.loads(sys.argv[1])
    res = asyncio.run(
        _passthrough(
            Settings(),
            args["bootstrap"],
            args["prefix"],
            {int(k): int(v) for k, v in args["start_offsets"].items()},
            int(args["max_frames"]),
            float(args["max_s"]),
        )
    )
    print(json.dumps(res))


def passthrough_figures(
    res: dict[str, Any], worker_cpu_ms_per_frame: float | None
) -> dict[str, Any]:
    """The ``passthrough_*`` figures and the ratio from a pass-through result (see module docs)."""
    frames = res.get("frames") or 0
    cpu_ms = _per(res.get("cpu_s"), frames, 1000.0, 4)
    wall = res.get("wall_s") or 0.0
    return {
        "passthrough_frames": frames,
        "passthrough_frames_per_s": round(frames / wall, 1) if frames and wall > 0 else None,
        "passthrough_cpu_ms_per_frame": cpu_ms,
        "passthrough_frame_bytes_mean": res.get("frame_bytes_mean"),
        "pipeline_to_passthrough_ratio": passthrough_ratio(cpu_ms, worker_cpu_ms_per_frame),
    }


# --------------------------------------------------------------------------------------------- the stack
class _Bench:
    """A started local stack with a beats collector: spawns replays, takes snapshots and runs pass-throughs."""

    def __init__(self, settings: Settings, stack: dict[str, Any], log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.bootstrap: str = stack["bootstrap"]
        self.ports: list[int] = stack["worker_ports"]
        self.workers = [p for n, p in stack["procs"].items() if n.startswith("worker") and p]
        broker = stack.get("broker")
        self.broker_pid: int | None = (
            broker.process.pid if broker is not None and broker.process is not None else None
        )
        self.env = {
            **os.environ,
            "ECG_KAFKA_BOOTSTRAP": self.bootstrap,
            "ECG_DATA_DIR": str(Path(settings.data_dir).resolve()),
        }
        self.collector = _BeatsCollector(settings, self.bootstrap)
        #: faults per minute per stream the replays inject (0: none)
        self.fault_rate = 0.0

    def spawn_replay(
        self, prefix: str, records: Sequence[str], patients: int, duration_s: float
    ) -> subprocess.Popen[bytes]:
        """A looping real-time replay of ``patients`` streams, ids ``<prefix>-NNNN``; without faults unless
        :attr:`fault_rate` (random faults, e.g. lead-off on one lead: the recovery models then run)."""
        faults = ["--faults", "none"]
        if self.fault_rate > 0:
            faults = ["--faults", "random", "--fault-rate", f"{self.fault_rate:g}"]
        args = ["replay", "--bootstrap", self.bootstrap, "--patients", str(patients)]
        args += ["--speed", "1", *faults, "--loop", "--records", ",".join(records)]
        args += ["--prefix", prefix, "--metrics-port", "-1", "--duration", str(duration_s)]
        return spawn_cli(args, self.env, self.log_dir / f"replay-{prefix}.log")

    def check_alive(self, replay: subprocess.Popen[bytes]) -> None:
        """RuntimeError when the replay or a worker has exited."""
        if replay.poll() is not None:
            raise RuntimeError(f"the replay exited early; see {self.log_dir}/replay-*.log")
        if any(w.poll() is not None for w in self.workers):
            raise RuntimeError(f"a worker exited; see {self.log_dir}/worker*.log")

    def sleep_until(self, t: float, replay: subprocess.Popen[bytes]) -> None:
        """Sleep until wall time ``t``, checking every second that the replay and the workers run."""
        while (left := t - time.time()) > 0:
            self.check_alive(replay)
            time.sleep(min(1.0, left))

    def first_processed(
        self, prefix: str, replay: subprocess.Popen[bytes], timeout_s: float = 120.0
    ) -> float:
        """processed_at of the first frame of ``prefix`` (waiting up to ``timeout_s``)."""
        deadline = time.time() + timeout_s
        while not (rows := self.collector.take(prefix)):
            self.check_alive(replay)
            if time.time() > deadline:
                raise RuntimeError(
                    f"no frame processed after {timeout_s:.0f} s; logs in {self.log_dir}"
                )
            time.sleep(0.2)
        return min(at for at, _, _ in rows)

    def snapshot(self, replay: subprocess.Popen[bytes] | None) -> Snapshot:
        """Counters of workers, broker and replay now."""
        stages: dict[str, float] = defaultdict(float)
        for p in self.ports:
            for k, v in scrape_metrics(self.settings.bind_host, p).items():
                if k.startswith(
                    ("ecg_stage_duration_seconds_sum{", "ecg_stage_duration_seconds_count{")
                ):
                    stages[k] += v
                elif k.startswith("ecg_output_messages_total{"):
                    stages[OUTPUTS_KEY] += v
        replay_pid = replay.pid if replay is not None and replay.poll() is None else None
        worker_pids = [w.pid for w in self.workers]
        return Snapshot(
            t=time.time(),
            worker_cpu_s=_sum_or_none([proc_cpu_seconds(p) for p in worker_pids]),
            broker_cpu_s=proc_cpu_seconds(self.broker_pid),
            replay_cpu_s=proc_cpu_seconds(replay_pid),
            worker_rss_mb=_sum_or_none([rss_mb(p) for p in worker_pids]),
            broker_rss_mb=rss_mb(self.broker_pid),
            replay_rss_mb=rss_mb(replay_pid),
            stages=dict(stages),
        )

    def window(
        self, prefix: str, a: Snapshot, b: Snapshot, patients: int, shape: dict[str, Any]
    ) -> dict[str, Any]:
        """Every figure of the frames of ``prefix`` processed between snapshots ``a`` and ``b``."""
        res = summarise_window(
            self.collector.take(prefix),
            a.t,
            b.t - a.t,
            patients,
            self.settings.frame_seconds,
            shape["leads"],
        )
        lead_samples = round(res["lead_samples_per_s"] * (b.t - a.t))
        res.update(cpu_figures(a, b, res["frames"], lead_samples))
        res["load_average_1m"] = round(os.getloadavg()[0], 2)
        return res

    def telemetry_offsets(self) -> dict[int, int]:
        """Latest offset of every telemetry partition (ListOffsets; the embedded broker may answer short of the
        end by one batch, which the pass-through skips by key)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from stream.broker import client_kwargs

        async def ends() -> dict[int, int]:
            c = AIOKafkaConsumer(**client_kwargs(self.settings, self.bootstrap), group_id=None)
            await c.start()
            try:
                tps = [
                    TopicPartition(self.settings.topics.telemetry, p)
                    for p in range(self.settings.partitions)
                ]
                return {tp.partition: int(o) for tp, o in (await c.end_offsets(tps)).items()}
            finally:
                await c.stop()

        return asyncio.run(ends())

    def passthrough(
        self, prefix: str, start_offsets: dict[int, int], max_frames: int, max_s: float
    ) -> dict[str, Any]:
        """Run the pass-through (:func:`_passthrough`) in a child process; its JSON result, or
        ``{"error": ...}`` when it failed."""
        args = json.dumps(
            {
                "bootstrap": self.bootstrap,
                "prefix": prefix,
                "start_offsets": start_offsets,
                "max_frames": max_frames,
                "max_s": max_s,
            }
        )
        code = "from stream.bench import passthrough_main; passthrough_main()"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, args],
                env=self.env,
                capture_output=True,
                timeout=max_s + 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"pass-through did not finish in {max_s + 60:.0f} s"}
        lines = done.stdout.decode().strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = done.stderr.decode().strip().splitlines()[-1:] or ["no output"]
            return {"error": f"pass-through exited with {done.returncode}: {tail[0]}"}
        return dict(json.loads(lines[-1]))

    def measure_passthrough(
        self, prefix: str, start_offsets: dict[int, int], worker_cpu_ms: float | None
    ) -> dict[str, Any]:
        """After draining: pass-through of the run's frames, as ``passthrough_*`` figures."""
        drain(self.ports)
        frames = len(self.collector.take(prefix))
        res = self.passthrough(prefix, start_offsets, max(1, frames), PASSTHROUGH_MAX_S)
        out = passthrough_figures(res, worker_cpu_ms)
        if "error" in res:
            out["passthrough_error"] = res["error"]
        return out


@contextmanager
def bench_stack(
    settings: Settings, *, workers: int = 1, models: str | None = None, name: str = "bench"
) -> Iterator[_Bench]:
    """The local stack (no replay) with its workers serving /metrics, the pass-through's scratch topic and a
    running beats collector."""
    from stream.broker import ensure_topics_sync

    log_dir = Path(tempfile.mkdtemp(prefix=f"ecg-{name}-"))
    port = free_port(settings.bind_host, count=workers + 1)  # workers use port, port + 1, ...
    with local_stack(
        settings, log_dir=log_dir, metrics_port=port, replay=False, workers=workers, models=models
    ) as stack:
        b = _Bench(settings, stack, log_dir)
        for p, w in zip(b.ports, b.workers, strict=True):
            wait_for_metrics(settings.bind_host, p, proc=w)
        ensure_topics_sync(settings, b.bootstrap, [settings.topics.telemetry + PASSTHROUGH_SUFFIX])
        b.collector.start()
        try:
            yield b
        finally:
            b.collector.stop()


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


def _progress_line(label: str, r: dict[str, Any]) -> str:
    """One line of a run's or a minute's main figures."""
    line = (
        f"{label}: {r['frames_per_s']:.1f} frames/s (offered {r['offered_frames_per_s']:.1f}), "
        f"p50 {r['p50_s']} s, p99 {r['p99_s']} s, worker {r['worker_cpu_ms_per_frame']} ms/frame "
        f"{r['worker_rss_mb']} MB, broker CPU {r['broker_cpu_share']} {r['broker_rss_mb']} MB"
    )
    if "pipeline_to_passthrough_ratio" in r:
        line += f", pass-through ratio {r['pipeline_to_passthrough_ratio']}"
    return line + ("" if r["realtime"] else "  NOT real time")


def run_minutes(
    bench: _Bench,
    *,
    prefix: str,
    records: Sequence[str],
    patients: int,
    minutes: int,
    shape: dict[str, Any],
    log: Any = None,
) -> list[dict[str, Any]]:
    """One looping real-time replay for ``minutes`` minutes from its first processed frame; every figure of
    each minute (:meth:`_Bench.window`, plus ``minute``)."""
    replay = bench.spawn_replay(prefix, records, patients, minutes * 60 + 120)
    rows: list[dict[str, Any]] = []
    try:
        start = bench.first_processed(prefix, replay)
        prev = bench.snapshot(replay)
        for minute in range(1, minutes + 1):
            bench.sleep_until(start + 60 * minute, replay)
            snap = bench.snapshot(replay)
            row = {"minute": minute, **bench.window(prefix, prev, snap, patients, shape)}
            rows.append(row)
            if log is not None:
                log(_progress_line(f"minute {minute:3d}", row))
            prev = snap
    finally:
        terminate(replay)
    return rows


def run_bench(
    settings: Settings,
    *,
    patients: int,
    runs: int = 3,
    seconds: float = 30.0,
    warmup: float = 10.0,
    progress: bool = True,
    records: str | Sequence[str] = "mitdb",
    workers: int = 1,
    models: str | None = None,
    minutes: int | None = None,
    passthrough: bool = True,
    fault_rate: float = 0.0,
) -> dict[str, Any]:
    """Run the benchmark (see module docs) and return the median figures plus every run (or, with
    ``minutes``, the last minute's figures plus every minute). ``records``: a :data:`RECORD_SETS` name or
    database dirs; ``fault_rate``: random faults per minute per stream (frames a lost-frames fault withholds
    are never offered)."""
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    dirs = record_set(records) if isinstance(records, str) else tuple(records)
    shape = stream_shape(dirs, settings.data_dir, patients, settings.frame_seconds)
    tag = (
        f"{int(time.time()) % 1_000_000:06d}"  # stream ids unique to this bench (external brokers)
    )
    per_run: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with bench_stack(settings, workers=workers, models=models) as bench:
        bench.fault_rate = fault_rate
        if minutes is not None:
            prefix = f"bench{tag}m"
            console.print(f"one run of {minutes} min: {patients} {records} streams")
            offsets = bench.telemetry_offsets()
            rows = run_minutes(
                bench,
                prefix=prefix,
                records=dirs,
                patients=patients,
                minutes=minutes,
                shape=shape,
                log=console.print,
            )
            last = dict(rows[-1])
            if passthrough:
                last.update(
                    bench.measure_passthrough(prefix, offsets, last["worker_cpu_ms_per_frame"])
                )
            per_run.append(last)
            extra = {"minutes": minutes, **minute_verdict(rows), "per_minute": rows}
        for r in range(runs if minutes is None else 0):
            prefix = f"bench{tag}r{r}"
            console.print(
                f"run {r + 1}/{runs}: {patients} {records} streams, {warmup:g} s warm-up + {seconds:g} s"
            )
            offsets = bench.telemetry_offsets()
            replay = bench.spawn_replay(prefix, dirs, patients, warmup + seconds + 120)
            try:
                t_measure = bench.first_processed(prefix, replay) + warmup
                bench.sleep_until(t_measure, replay)
                a = bench.snapshot(replay)
                bench.sleep_until(t_measure + seconds, replay)
                b = bench.snapshot(replay)
                time.sleep(3.0)  # receipts of the window still on their way to the collector
            finally:
                terminate(replay)
            res = bench.window(prefix, a, b, patients, shape)
            if passthrough:
                res.update(
                    bench.measure_passthrough(prefix, offsets, res["worker_cpu_ms_per_frame"])
                )
            else:
                drain(bench.ports)  # a backlog left by this run must not count against the next one
            per_run.append(res)
            console.print(_progress_line(f"run {r + 1}/{runs}", res))
    result: dict[str, Any] = {
        "patients": patients,
        "workers": workers,
        "models": models,
        "records": records if isinstance(records, str) else ",".join(records),
        "fault_rate_per_min": fault_rate,
        **shape,
        "runs": len(per_run),
        "seconds_per_run": seconds if minutes is None else 60.0 * minutes,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "external_broker": bench.broker_pid is None,
        "ratio_definition": RATIO_DEFINITION,
    }
    for k in MEDIAN_KEYS:
        result[k] = median_or_none([run.get(k) for run in per_run])
    result["offered_frames_per_s"] = per_run[0]["offered_frames_per_s"]
    result["realtime"] = bool(sum(run["realtime"] for run in per_run) * 2 > len(per_run))
    stage_names = sorted({st for run in per_run for st in run["stage_ms_per_frame"]})
    result["stage_ms_per_frame"] = {
        st: statistics.median(run["stage_ms_per_frame"].get(st, 0.0) for run in per_run)
        for st in stage_names
    }
    result["per_run"] = per_run
    result.update(extra)
    return result


def run_soak(
    settings: Settings,
    *,
    patients: int,
    minutes: int,
    models: str | None = None,
    records: str | Sequence[str] = ("mitdb",),
    progress: bool = True,
) -> dict[str, Any]:
    """``patients`` real-time streams for ``minutes`` on the local stack (:func:`run_minutes`): per minute
    broker and worker RSS and CPU, frames processed per second and latency percentiles of that minute's frames.
    The verdict (from 10 minutes on): RSS growth after the first 5 minutes under 10 % for broker and worker,
    and the p99 of the last 5 minutes within 1.5x of the first 5."""
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    dirs = record_set(records) if isinstance(records, str) else tuple(records)
    shape = stream_shape(dirs, settings.data_dir, patients, settings.frame_seconds)
    with bench_stack(settings, workers=1, models=models, name="soak") as bench:
        rows = run_minutes(
            bench,
            prefix=f"soak{int(time.time()) % 1_000_000:06d}",
            records=dirs,
            patients=patients,
            minutes=minutes,
            shape=shape,
            log=console.print,
        )
    return {
        "patients": patients,
        "minutes": minutes,
        **shape,
        "per_minute": rows,
        **soak_verdict(rows),
        "realtime_after_first_minute": minute_verdict(rows)["held"],
    }
