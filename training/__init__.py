"""Offline training, evaluation and export of ecg-monitor's models (torch is an optional extra)."""
