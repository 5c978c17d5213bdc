"""Per-stream buffering: sequence tracking (duplicates, gaps) and an absolute-indexed sample ring buffer.

Frames of one stream arrive in sequence order with ``seq`` numbers. :class:`SequenceTracker` classifies
each frame as new, duplicate (``seq`` <= last seen) or new-after-a-gap (lost frames). :class:`SampleBuffer`
keeps the most recent samples of a stream addressed by *absolute* sample index (0 = first sample of the
stream), so stages can cut windows that straddle frame boundaries; lost frames are filled with NaN so
absolute indices stay aligned with time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeqStatus:
    """Outcome of :meth:`SequenceTracker.observe`: ``duplicate`` or the number of frames lost before it."""

    duplicate: bool
    missing: int


class SequenceTracker:
    """Tracks the last sequence number of one stream."""

    def __init__(self) -> None:
        self.last_seq: int | None = None

    def observe(self, seq: int) -> SeqStatus:
        """Classify ``seq``: a duplicate/old frame, or a new one after ``missing`` lost frames."""
        if self.last_seq is not None and seq <= self.last_seq:
            return SeqStatus(duplicate=True, missing=0)
        missing = 0 if self.last_seq is None else seq - self.last_seq - 1
        self.last_seq = seq
        return SeqStatus(duplicate=False, missing=missing)


class SampleBuffer:
    """The last ``capacity`` samples ``[n, n_leads]`` of a stream, addressed by absolute sample index."""

    def __init__(self, capacity: int, n_leads: int, dtype: type = np.float32) -> None:
        if capacity <= 0 or n_leads <= 0:
            raise ValueError(f"capacity and n_leads must be positive, got {capacity}, {n_leads}")
        self.capacity = int(capacity)
        self.n_leads = int(n_leads)
        self._data: np.ndarray = np.full((2 * self.capacity, self.n_leads), np.nan, dtype=dtype)
        self._len = 0  # valid samples held in _data[:_len]
        self.end = 0  # absolute index one past the newest sample

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still held."""
        return self.end - min(self._len, self.capacity)

    def append(self, chunk: np.ndarray) -> None:
        """Append ``[n, n_leads]`` samples (a 1-D chunk is taken as one lead)."""
        arr = np.asarray(chunk)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape[1] != self.n_leads:
            raise ValueError(f"chunk has {arr.shape[1]} leads, buffer holds {self.n_leads}")
        n = arr.shape[0]
        if n >= self.capacity:
            self._data[: self.capacity] = arr[-self.capacity :]
            self._len = self.capacity
        else:
            if self._len + n > self._data.shape[0]:
                keep = self.capacity - n
                self._data[:keep] = self._data[self._len - keep : self._len]
                self._len = keep
            self._data[self._len : self._len + n] = arr
            self._len += n  # storage holds up to 2x capacity and compacts lazily
        self.end += n

    def append_gap(self, n: int) -> None:
        """Advance by ``n`` missing samples (NaN), e.g. for lost frames."""
        if n <= 0:
            return
        if n >= self.capacity:
            self._data[: self.capacity] = np.nan
            self._len = self.capacity
            self.end += n
            return
        self.append(np.full((n, self.n_leads), np.nan, dtype=self._data.dtype))

    def mask(self, start: int, stop: int, lead: int) -> None:
        """Set absolute samples ``[start, stop)`` of ``lead`` to NaN (clipped to the samples held)."""
        a, b = max(start, self.start), min(stop, self.end)
        if a < b:
            base = self.end - self._len
            self._data[a - base : b - base, lead] = np.nan

    def available(self, start: int, stop: int) -> bool:
        """True when absolute samples ``[start, stop)`` are all still held."""
        return self.start <= start <= stop <= self.end

    def get(self, start: int, stop: int) -> np.ndarray:
        """A view of absolute samples ``[start, stop)``; raises ``IndexError`` when not held."""
        if not self.available(start, stop):
            raise IndexError(f"samples [{start}, {stop}) not in buffer [{self.start}, {self.end})")
        base = self.end - self._len
        return self._data[start - base : stop - base]
