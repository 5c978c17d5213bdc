"""``python -m simulators``: the replay simulator (same as ``ecg-monitor replay``)."""

from __future__ import annotations

import sys

from stream.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "replay", *sys.argv[1:]]
    main()
