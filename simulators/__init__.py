"""Replay of WFDB records as live telemetry, with fault injection."""
