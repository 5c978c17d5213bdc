"""Who may use the dashboard and how much: the access token and the per-client rate limits.

- Bound to a loopback address (the default, ``127.0.0.1``) and without ``ECG_DASHBOARD_TOKEN``, no token is
  asked. Bound elsewhere, a token is required (:func:`check_bind` refuses to start without one); when a
  token is set it is required on every route but ``/healthz``: ``Authorization: Bearer <token>``, the
  ``ecg_dashboard_token`` cookie, or ``?token=`` (which sets that cookie, HttpOnly, SameSite=Strict, so the
  page's own requests and event streams carry it).
- :class:`RateLimiter`: a sliding one-minute window per client address, over a bounded set of addresses.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict, deque

from stream.errors import ConfigError

TOKEN_COOKIE = "ecg_dashboard_token"
#: Routes served without a token.
OPEN_PATHS: frozenset[str] = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on the loopback interface."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """:class:`ConfigError` for a non-loopback bind without an access token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"the dashboard binds {host}, which is not a loopback address: set ECG_DASHBOARD_TOKEN "
            "(an access token every request must carry) or bind 127.0.0.1"
        )


def token_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def presented_token(
    headers: dict[str, str], cookies: dict[str, str], query: dict[str, str]
) -> tuple[str | None, bool]:
    """The token a request carries and whether it came in the query (to be set as cookie)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if TOKEN_COOKIE in cookies:
        return cookies[TOKEN_COOKIE], False
    if "token" in query:
        return query["token"], True
    return None, False


class RateLimiter:
    """At most ``per_minute`` events per key (client address) in any 60 s; at most ``max_keys`` keys
    tracked (the least recently seen forgotten first)."""

    def __init__(self, per_minute: int, max_keys: int = 4096) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Count one event of ``key``; False (not counted) when it is over the limit."""
        now = time.monotonic() if now is None else now
        hits = self._hits.pop(key, None) or deque()
        while hits and hits[0] <= now - 60.0:
            hits.popleft()
        ok = len(hits) < self.per_minute
        if ok:
            hits.append(now)
        self._hits[key] = hits
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
        return ok

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Seconds until ``key`` may act again (at least 1)."""
        now = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if not hits:
            return 1
        return max(1, int(hits[0] + 60.0 - now) + 1)


class StreamSlots:
    """Open live event streams: at most ``total`` at once, ``per_key`` from one client address."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self.open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        if sum(self.open.values()) >= self.total or self.open.get(key, 0) >= self.per_key:
            return False
        self.open[key] = self.open.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        n = self.open.get(key, 0) - 1
        if n > 0:
            self.open[key] = n
        else:
            self.open.pop(key, None)
