"""``stream.broker.free_port`` hands out ports outside the kernel's ephemeral range, ``count`` of them
consecutive and all bindable, so a child's ``port + 1`` is never taken by an outgoing connection."""

from __future__ import annotations

import socket

from stream.broker import _ephemeral_range, free_port


def test_consecutive_ports_are_free_and_below_the_ephemeral_range() -> None:
    low, _ = _ephemeral_range()
    for count in (1, 2, 5):
        port = free_port(count=count)
        if low > 11_000:
            assert port >= 10_000 and port + count <= low
        socks = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port + i))
        finally:
            for s in socks:
                s.close()


def test_a_busy_port_is_never_handed_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert all(free_port() != taken for _ in range(50))
