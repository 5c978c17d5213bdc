"""A local-broker restart mid-replay: every frame sent after the restart is processed (the worker follows the
new offsets instead of dropping them as redeliveries), and the frames lost with the broker's memory are
counted (sequence gap: ecg_frames_missing_total, missing_frames dropouts)."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from stream.broker import LocalBroker, ensure_topics_sync, free_port
from stream.schemas import BeatBatchMessage, DropoutMessage
from stream.stack import scrape_metrics, spawn_cli, terminate, wait_for_metrics
from tests.integration.conftest import consume, fresh_settings, settings_env

pytestmark = pytest.mark.integration


def test_broker_restart_mid_replay_loses_nothing_silently(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    broker = LocalBroker(port=port, log_path=tmp_path / "broker-1.log").start()
    settings = fresh_settings(broker.bootstrap, data_dir, tmp_path / "cache", "rst")
    env = settings_env(settings)
    mport = free_port()
    worker = spawn_cli(
        ["worker", "--embedded", "--metrics-port", str(mport), "--models", "none"],
        env,
        tmp_path / "worker.log",
    )
    replay = None
    try:
        wait_for_metrics("127.0.0.1", mport, timeout_s=60, proc=worker)
        replay = spawn_cli(
            [
                *("replay", "--patients", "3", "--speed", "1", "--faults", "none"),
                *("-r", "mitdb/100", "--prefix", "rst", "--duration", "45", "--metrics-port", "-1"),
            ],
            env,
            tmp_path / "replay.log",
        )
        started = time.time()  # seq k of every stream is sent about k s after this (1 s frames, 1x)
        deadline = time.time() + 60
        while scrape_metrics("127.0.0.1", mport).get("ecg_frames_received_total", 0) < 24:
            assert time.time() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.5)
        # the broker dies (memory storage: topics, offsets and groups gone) and comes back
        proc = broker.process
        assert proc is not None
        proc.kill()
        proc.wait()
        time.sleep(3.0)
        broker = LocalBroker(port=port, log_path=tmp_path / "broker-2.log").start()
        ensure_topics_sync(settings)
        # frames sent from here on land in the recreated topics (Tansu acknowledges and discards a produce
        # to a topic it does not have yet: those count as missing frames below, not as processed)
        recreated_seq = int(time.time() - started) + 3
        replay.wait(timeout=90)
        summary = (tmp_path / "replay.log").read_text()
        time.sleep(5.0)
        m = scrape_metrics("127.0.0.1", mport)
        assert worker.poll() is None, "the worker died"
        receipts = [
            BeatBatchMessage.from_bytes(v) for v in consume(settings, settings.topics.beats)
        ]
        seqs: dict[str, list[int]] = defaultdict(list)
        for r in receipts:
            seqs[r.stream_id].append(r.seq)
        assert len(seqs) == 3, summary[-1500:]
        # every frame the replay sent after the restart was processed, to the end of the replay
        last = max(max(s) for s in seqs.values())
        assert last >= 40, (last, summary[-1500:])
        for sid, ss in seqs.items():
            got = sorted(s for s in set(ss) if s >= recreated_seq)
            assert got == list(range(recreated_seq, got[-1] + 1)), (
                f"{sid}: gaps after the restart {got}"
            )
            assert got[-1] >= last - 1, (sid, got[-1], last)
        assert m.get("ecg_offset_resets_total", 0) >= 1, m
        # nothing lost silently: what the worker processed plus the frames it counted missing (seq gaps,
        # e.g. acknowledged by the old broker but never delivered) equals what the replay generated: its
        # acknowledged sends plus the sends it gave up (and reported)
        sent = re.search(r"sent (\d+) frames.*?lost (\d+)", summary)
        assert sent is not None, summary[-1500:]
        generated = int(sent.group(1)) + int(sent.group(2))
        processed = m["ecg_frames_received_total"] - m["ecg_frames_duplicate_total"]
        processed -= m.get("ecg_frames_rejected_total", 0)
        missing = m.get("ecg_frames_missing_total", 0)
        assert processed + missing == generated, (processed, missing, summary[-800:])
        if missing:
            drops = [
                DropoutMessage.from_bytes(v) for v in consume(settings, settings.topics.dropouts)
            ]
            assert any(d.kind == "missing_frames" for d in drops)
    finally:
        if replay is not None:
            terminate(replay)
        terminate(worker, timeout_s=5)
        broker.stop()
