"""Rate-limited logging: client libraries repeat the same line many times a second while a broker is down.

:class:`RateLimitFilter` lets a (logger, level, message template) through at most ``per_interval`` times per
``interval_s`` seconds and then, once that interval is over, one ``suppressed K similar lines`` line. It sits
on handlers (a logger's own filters do not see its children's records), and only limits the loggers named in
``prefixes`` (and their children); every other record passes untouched.

:func:`install_rate_limit` adds one to every handler of the root logger: the replay and ``ecg-monitor up``
call it after ``logging.basicConfig``, the worker after Faust has set up its logging.
"""

from __future__ import annotations

import atexit
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Loggers of the Kafka client and stream-processing libraries.
CLIENT_LOGGERS: tuple[str, ...] = ("aiokafka", "faust", "mode")

_DIGITS = re.compile(r"\d+")


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0
    last: logging.LogRecord | None = None  # last suppressed record (shown in the summary)


class RateLimitFilter(logging.Filter):
    """Handler filter: at most ``per_interval`` records of one (logger, level, template) per ``interval_s``.

    The template is the record's unformatted message with digit runs masked, so f-strings that only differ by
    a number (a port, a counter) count as the same line. When an interval with suppressed records is over, one
    summary record (``suppressed K similar lines in the last N s, last: ...``) goes to the same handlers; it is
    emitted on the next record through the filter, or by :meth:`flush` (registered at exit by
    :func:`install_rate_limit`). Shared by several handlers, a record is counted once.
    """

    def __init__(
        self,
        per_interval: int = 3,
        interval_s: float = 10.0,
        prefixes: Sequence[str] | None = CLIENT_LOGGERS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        super().__init__()
        if per_interval < 1 or interval_s <= 0:
            raise ValueError("per_interval must be >= 1 and interval_s > 0")
        self.per_interval = per_interval
        self.interval_s = interval_s
        self.prefixes = tuple(prefixes) if prefixes is not None else None
        self.clock = clock
        self.max_keys = max_keys
        self.suppressed_total = 0
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._last_record: logging.LogRecord | None = None
        self._last_verdict = True
        self._last_scan = float("-inf")

    # ------------------------------------------------------------------------------------------ filter
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "rate_limit_summary", False):
            return True
        if record is self._last_record:  # the same record through another handler
            return self._last_verdict
        verdict = self._decide(record)
        self._last_record, self._last_verdict = record, verdict
        return verdict

    def _limited(self, name: str) -> bool:
        if self.prefixes is None:
            return True
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def _decide(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now - self._last_scan >= self.interval_s / 10:
            self._last_scan = now
            self._flush_expired(now)
        if not self._limited(record.name):
            return True
        key = (record.name, record.levelno, _DIGITS.sub("#", str(record.msg)))
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval_s:
            if window is not None and window.suppressed:
                self._summarise(key, window, now)
            if window is None and len(self._windows) >= self.max_keys:
                self._flush_expired(now, force=True)
            window = self._windows[key] = _Window(start=now)
        window.count += 1
        if window.count <= self.per_interval:
            return True
        window.suppressed += 1
        window.last = record
        self.suppressed_total += 1
        return False

    # ------------------------------------------------------------------------------------- summaries
    def _flush_expired(self, now: float, force: bool = False) -> None:
        for key, window in list(self._windows.items()):
            if force or now - window.start >= self.interval_s:
                if window.suppressed:
                    self._summarise(key, window, now)
                del self._windows[key]

    def flush(self) -> None:
        """Emit the summary of every window with suppressed records now (at exit)."""
        self._flush_expired(self.clock(), force=True)

    def _summarise(self, key: tuple[str, int, str], window: _Window, now: float) -> None:
        name, level, _ = key
        last = window.last
        try:
            text = last.getMessage() if last is not None else key[2]
        except Exception:  # a broken record must not break logging
            text = key[2]
        logger = logging.getLogger(name)
        summary = logger.makeRecord(
            name,
            level,
            last.pathname if last is not None else "",
            last.lineno if last is not None else 0,
            "suppressed %d similar lines in the last %.0f s, last: %s",
            (window.suppressed, max(1.0, min(now - window.start, self.interval_s)), text),
            None,
        )
        summary.rate_limit_summary = True
        window.suppressed = 0
        logger.callHandlers(summary)


def install_rate_limit(
    per_interval: int = 3,
    interval_s: float = 10.0,
    prefixes: Sequence[str] | None = CLIENT_LOGGERS,
    logger: logging.Logger | None = None,
) -> RateLimitFilter:
    """Add one :class:`RateLimitFilter` to every handler of ``logger`` (default: root) and flush it at exit.

    Handlers that already carry a :class:`RateLimitFilter` keep theirs. A logger without handlers first gets
    ``logging.basicConfig``'s stderr handler (root only), so the limit applies to what is actually printed.
    """
    target = logger or logging.getLogger()
    if target is logging.getLogger() and not target.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limiter = RateLimitFilter(per_interval, interval_s, prefixes)
    for handler in target.handlers:
        if not any(isinstance(f, RateLimitFilter) for f in handler.filters):
            handler.addFilter(limiter)
    atexit.register(limiter.flush)
    return limiter


__all__ = ["CLIENT_LOGGERS", "RateLimitFilter", "install_rate_limit"]
