"""Scratch buffers reused by the compiled passes, one set per thread."""

from __future__ import annotations

import numpy as np


class Workspace:
    """Named scratch arrays, grown on demand and reused from call to call.

    One per thread: the buffers stay in that core's cache from channel to channel and
    frame to frame, and allocating and faulting in fresh pages for every call costs more
    than the arithmetic done in them.
    """

    def __init__(self):
        self._buffers: dict[tuple[str, type], np.ndarray] = {}

    def get(self, name: str, n: int, dtype=np.float64) -> np.ndarray:
        """A 1-D array of ``n`` elements (contents undefined), a view of the named buffer."""
        buf = self._buffers.get((name, dtype))
        if buf is None or len(buf) < n:
            buf = self._buffers[(name, dtype)] = np.empty(max(n, 1 << 16), dtype=dtype)
        return buf[:n]
