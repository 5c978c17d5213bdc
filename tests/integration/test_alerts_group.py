"""``ecg-monitor alerts --group``: a consumer group commits what it printed, so each alert is delivered once
per group (across runs and between two members running at once); without a group every run reads it all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from stream.broker import client_kwargs
from stream.schemas import AlertMessage
from stream.settings import Settings
from tests.integration.conftest import settings_env

pytestmark = pytest.mark.integration

N_STREAMS = 8


def _publish(settings: Settings) -> set[tuple[str, str]]:
    """Two transitions (raised, resolved) of one alert per stream, keyed by stream (spread over partitions)."""
    from aiokafka import AIOKafkaProducer

    sent = set()

    async def run() -> None:
        producer = AIOKafkaProducer(**client_kwargs(settings))
        await producer.start()
        try:
            for i in range(N_STREAMS):
                sid = f"patient-{i:04d}"
                for status in ("raised", "resolved"):
                    msg = AlertMessage(
                        id=f"{sid}:asystole:{i}",
                        stream_id=sid,
                        kind="asystole" if i % 2 else "signal_loss",
                        severity="critical" if i % 2 else "warning",
                        status=status,  # type: ignore[arg-type]
                        start="2026-01-01T00:00:12+00:00",
                        start_ts=1_767_225_612.0 + i,
                    )
                    await producer.send_and_wait(
                        settings.topics.alerts, msg.to_bytes(), key=sid.encode()
                    )
                    sent.add((msg.id, status))
        finally:
            await producer.stop()

    asyncio.run(run())
    return sent


def _alerts(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "alerts", "--json", "--idle", "2", *args],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _printed(proc: subprocess.Popen[str]) -> list[tuple[str, str]]:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    return [(m["id"], m["status"]) for m in map(json.loads, out.splitlines())]


def test_a_group_gets_each_alert_once(settings: Settings) -> None:
    sent = _publish(settings)
    # the first run of a group reads everything and commits it; its next run has nothing new
    first = _printed(_alerts(settings, "--group", "g1"))
    assert sorted(first) == sorted(sent)
    assert _printed(_alerts(settings, "--group", "g1")) == []
    # --from-beginning reads the topic again whatever the group committed; filters apply
    again = _printed(_alerts(settings, "--group", "g1", "--from-beginning", "--kind", "asystole"))
    assert sorted(again) == sorted(p for p in sent if int(p[0].rsplit(":", 1)[1]) % 2)
    # two members of another group at once share the alerts: together all of them, none twice
    a, b = _alerts(settings, "--group", "g2"), _alerts(settings, "--group", "g2")
    both = _printed(a) + _printed(b)
    assert sorted(both) == sorted(sent)
    # without a group every run prints every alert
    assert sorted(_printed(_alerts(settings))) == sorted(sent)
