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

    @property
    def nbytes(self) -> int:
        return sum(buf.nbytes for buf in self._buffers.values())


_idle: list[Workspace] = []
_idle_lock = threading.Lock()

#: A workspace grown past this (by an unusually large ``chunk_rows`` or window) is let go
#: of rather than kept for the next analysis: the presets' need a few MB to about 20 MB.
KEEP_AT_MOST_BYTES = 64 << 20


def borrow() -> Workspace:
    """A workspace no thread is using, made when there is none; :func:`give_back` it.

    Successive analyses in one process then reuse buffers that are already mapped (and
    often still cached) instead of faulting in fresh pages for every file. The process
    keeps as many workspaces as it ever had in use at once, up to
    :data:`KEEP_AT_MOST_BYTES` each.
    """
    with _idle_lock:
        return _idle.pop() if _idle else Workspace()


def give_back(ws: Workspace) -> None:
    """Return a borrowed workspace; the caller must hold no views of its buffers."""
    if ws.nbytes > KEEP_AT_MOST_BYTES:
        return
    with _idle_lock:
        _idle.append(ws)
