"""Scratch buffers reused by the compiled passes, one set per thread."""

from __future__ import annotations

import threading

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


_idle: list[Workspace] = []
_idle_lock = threading.Lock()


def borrow() -> Workspace:
    """A workspace no thread is using, made when there is none; :func:`give_back` it.

    Successive analyses in one process then reuse buffers that are already mapped (and
    often still cached) instead of faulting in fresh pages for every file. The process
    keeps as many workspaces as it ever had in use at once, each as large as its largest
    use (a few MB per lane at the presets' chunk sizes).
    """
    with _idle_lock:
        return _idle.pop() if _idle else Workspace()


def give_back(ws: Workspace) -> None:
    """Return a borrowed workspace; the caller must hold no views of its buffers."""
    with _idle_lock:
        _idle.append(ws)
