"""The replay's producer batches frames for ``Settings.replay_linger_ms`` (fewer, larger produce requests: the
embedded broker's CPU per frame fell threefold from 5 to 50 ms, README Performance)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka
import pytest

from simulators.replay import replay_to_kafka
from stream.settings import Settings


class _RefusedError(Exception):
    pass


@pytest.mark.parametrize("linger_ms", [None, 7])
def test_the_replay_producer_lingers_as_set(
    monkeypatch: pytest.MonkeyPatch, linger_ms: int | None
) -> None:
    seen: dict[str, Any] = {}

    class Producer:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        async def start(self) -> None:
            raise _RefusedError  # stop here: only the producer's configuration is under test

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Producer)
    settings = Settings() if linger_ms is None else Settings(replay_linger_ms=linger_ms)
    with pytest.raises(_RefusedError):
        asyncio.run(replay_to_kafka(settings, [], bootstrap="127.0.0.1:9", replay=object()))
    assert seen["linger_ms"] == (50 if linger_ms is None else linger_ms)
    assert seen["acks"] == 1
