"""``python -m simulators [replay|nst|fuzz] ...``: the simulators (same as ``ecg-monitor replay``, ``nst``,
``fuzz``); without a command name, ``replay``."""

from __future__ import annotations

import sys

from stream.cli import main

#: simulator commands registered in the ``ecg_monitor.commands`` entry-point group (pyproject.toml)
COMMANDS: tuple[str, ...] = ("replay", "nst", "fuzz")

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] not in COMMANDS:
        args = ["replay", *args]
    sys.argv = [sys.argv[0], *args]
    main()
