"""The worker's Kafka consumer waits at most ``Settings.fetch_max_wait_ms`` per fetch (Faust hard-codes 1.5 s,
which the embedded broker holds even when data is there): the aiokafka consumer Faust builds gets the
setting, and the default is the measured 200 ms (README, Performance)."""

from __future__ import annotations

import asyncio

import pytest

from stream.app import FETCH_MAX_WAIT_MS, create_app
from stream.settings import Settings


@pytest.mark.parametrize("wait_ms", [None, 37])
def test_the_worker_consumer_gets_the_fetch_wait(wait_ms: int | None) -> None:
    settings = Settings() if wait_ms is None else Settings(fetch_max_wait_ms=wait_ms)

    async def built() -> int:
        app = create_app(settings, bootstrap="127.0.0.1:9")
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    got = asyncio.run(built())
    assert got == (wait_ms or FETCH_MAX_WAIT_MS)
    assert Settings().fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 200
