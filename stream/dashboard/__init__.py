"""The 12-lead anomaly dashboard: upload an ECG, see its reconstruction, score, attention and error."""
