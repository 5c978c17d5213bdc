"""How the command lines end on a predictable failure: one line on stderr and a documented exit status.

Every Typer app of the project (``ecg-monitor``, ``python -m training``) is built with
``cls=error_line_group(PROG)``: a project error (:class:`~models.errors.EcgMonitorError`) raised by any command
ends it with ``PROG: <message>`` on stderr, on one line, and the exit status of its class
(:func:`stream.errors.exit_code_for`; the codes are :data:`stream.errors.EXIT_CODES`). Two failures of other
libraries are mapped the same way: a port that is taken (``OSError`` EADDRINUSE: 5) and aiokafka's
connection errors (4). Anything else is a bug and keeps its traceback (exit 1).

The explicit checks commands run before they start anything (:func:`check_port_free`,
:func:`check_broker_reachable`) raise those errors early, with a message that names the option to change.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from stream.errors import (
    EXIT_BROKER_UNREACHABLE,
    EXIT_CODES,
    EXIT_PORT_IN_USE,
    BrokerUnreachableError,
    EcgMonitorError,
    PortInUseError,
    exit_code_for,
)

#: Seconds a broker's bootstrap server gets to accept a TCP connection in :func:`check_broker_reachable`.
CONNECT_TIMEOUT_S = 3.0


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of blanks folded into single spaces."""
    return " ".join(str(text).split())


def exit_codes_epilog(prog: str) -> str:
    """The exit statuses, one per line, for the ``--help`` epilog of ``prog``."""
    return "\n".join(
        [
            f"Exit status (a failure prints one line, {prog}: <message>, on stderr):",
            *(f"{code}  {meaning}" for code, meaning in EXIT_CODES),
        ]
    )


def classify(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, message) of a predictable failure; None for anything else (a bug: traceback)."""
    if isinstance(exc, EcgMonitorError):
        return exit_code_for(exc), str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return EXIT_PORT_IN_USE, f"port in use: {exc.strerror or exc}"
    aiokafka_errors = sys.modules.get("aiokafka.errors")
    if aiokafka_errors is not None and isinstance(exc, aiokafka_errors.KafkaConnectionError):
        return EXIT_BROKER_UNREACHABLE, f"Kafka broker unreachable: {exc}"
    return None


def fail(prog: str, code: int, message: str) -> NoReturn:
    """Print ``prog: message`` on one line of stderr and end the command with ``code``."""
    typer.echo(f"{prog}: {one_line(message)}", err=True)
    raise typer.Exit(code)


@contextmanager
def errors_as_exit(prog: str) -> Iterator[None]:
    """Turn a predictable failure raised in the block into one line and its exit status (see module docs)."""
    try:
        yield
    except Exception as exc:  # typer's own exits and usage errors are none of these: they pass
        known = classify(exc)
        if known is None:
            raise
        fail(prog, *known)


def error_line_group(prog: str) -> type[TyperGroup]:
    """A Typer group class whose commands end on a predictable failure with one line and its exit status."""

    class ErrorLineGroup(TyperGroup):
        def invoke(self, ctx: Any) -> Any:
            with errors_as_exit(prog):
                return super().invoke(ctx)

    ErrorLineGroup.__name__ = ErrorLineGroup.__qualname__ = f"ErrorLineGroup[{prog}]"
    return ErrorLineGroup


# ------------------------------------------------------------------------------------- explicit checks
def check_port_free(host: str, port: int, what: str, option: str = "") -> None:
    """:class:`PortInUseError` when something already listens on ``host:port`` (port 0: any free port, no
    check). Binds as the HTTP servers do (SO_REUSEADDR), so a port in TIME_WAIT counts as free."""
    if port <= 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            hint = f"; choose another with {option}" if option else ""
            raise PortInUseError(f"port {port} on {host} is in use ({what}){hint}") from None


def bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """(host, port) of each server of a bootstrap string (``h1:9092,h2:9092``, ``PLAINTEXT://h:9092``)."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" in item:
            item = item.split("://", 1)[1]
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def check_broker_reachable(bootstrap: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """:class:`BrokerUnreachableError` unless one bootstrap server accepts a TCP connection within
    ``timeout_s``: a short check before a client (aiokafka, Faust) would retry for minutes."""
    servers = bootstrap_servers(bootstrap)
    last: OSError | None = None
    for host, port in servers:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except OSError as exc:
            last = exc
    reason = (
        f": {last.strerror or last}" if last is not None else ": no server in the bootstrap string"
    )
    raise BrokerUnreachableError(
        f"Kafka broker unreachable at {bootstrap}{reason} (check --bootstrap / ECG_KAFKA_BOOTSTRAP)"
    )
