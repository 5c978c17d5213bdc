"""Publishing the pipeline's output messages: acknowledged, retried, counted, never raised into the agent.

:class:`Publisher` hands each :class:`~stream.pipeline.Outgoing` to a producer's ``send`` (which returns
a delivery future) without waiting for the broker's acknowledgement, so the agent keeps consuming. When the
acknowledgement comes, ``ecg_output_messages_total{topic}`` counts it (for the dead-letter topic this count
equals the records on the topic); a failed send (raised at once, e.g. buffer full or no metadata during a
broker outage, or reported by its future) is retried ``retries`` times with exponential backoff in the
background (``ecg_output_publish_retries_total``), then given up and counted
(``ecg_output_publish_failures_total``) with one rate-limited log line. Labels are topic roles (alerts,
beats, ...), never topic names chosen by a deployment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from stream.metrics import PipelineMetrics
from stream.pipeline import Outgoing
from stream.settings import TopicNames

log = logging.getLogger(__name__)

#: ``send(topic, key, value)`` -> the delivery future (awaitable that completes on acknowledgement)
SendFn = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]


class Publisher:
    """Send outputs, count acknowledgements, retry and count failures (see the module docstring)."""

    def __init__(
        self,
        send: SendFn,
        metrics: PipelineMetrics,
        topics: TopicNames,
        retries: int = 3,
        backoff_s: float = 0.2,
        log_interval_s: float = 10.0,
    ) -> None:
        self._send = send
        self.metrics = metrics
        self.retries = retries
        self.backoff_s = backoff_s
        self._roles = {getattr(topics, name): name for name in type(topics).model_fields}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_interval_s = log_interval_s
        self._last_log = float("-inf")
        self._suppressed = 0

    def role(self, topic: str) -> str:
        """The bounded metric label of a topic: its role (``alerts``, ``dead_letter``, ...)."""
        return self._roles.get(topic, "other")

    async def publish(self, outs: Sequence[Outgoing]) -> None:
        """Hand every message to the producer in order; never raises."""
        for out in outs:
            await self._attempt(out, 0)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) for the retries in flight (shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    @property
    def in_flight(self) -> int:
        """Retries scheduled and not finished."""
        return len(self._tasks)

    async def _attempt(self, out: Outgoing, attempt: int) -> None:
        try:
            fut = await self._send(out.topic, out.key, out.value)
        except Exception as exc:  # raised at once: buffer full, no metadata, record too large, ...
            self._failed(out, attempt, exc)
            return
        asyncio.ensure_future(fut).add_done_callback(
            lambda f, out=out, attempt=attempt: self._delivered(f, out, attempt)  # type: ignore[misc]
        )

    def _delivered(self, fut: asyncio.Future[Any], out: Outgoing, attempt: int) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            self._failed(out, attempt, exc or asyncio.CancelledError())
            return
        self.metrics.outputs_published.labels(self.role(out.topic)).inc()

    def _failed(self, out: Outgoing, attempt: int, exc: BaseException) -> None:
        role = self.role(out.topic)
        if attempt < self.retries:
            self.metrics.publish_retries.labels(role).inc()
            task = asyncio.get_running_loop().create_task(self._retry(out, attempt + 1))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self.metrics.publish_failures.labels(role).inc()
        now = time.monotonic()
        if now - self._last_log >= self._log_interval_s:
            more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
            log.error(
                "gave up publishing to %s after %d attempts: %s%s",
                out.topic,
                attempt + 1,
                f"{type(exc).__name__}: {exc}"[:300],
                more,
            )
            self._last_log, self._suppressed = now, 0
        else:
            self._suppressed += 1

    async def _retry(self, out: Outgoing, attempt: int) -> None:
        await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        await self._attempt(out, attempt)
