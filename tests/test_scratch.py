import threading

import numpy as np

from telemetry_lab import scratch


def test_workspace_buffers_grow_and_are_reused():
    ws = scratch.Workspace()
    a = ws.get("x", 10)
    assert a.shape == (10,) and a.dtype == np.float64
    b = ws.get("x", 1000)
    assert np.shares_memory(a, b)  # within the first allocation (at least 65,536)
    c = ws.get("x", 1 << 20)
    assert c.shape == (1 << 20,) and not np.shares_memory(b, c)
    assert ws.get("x", 5, np.int64).dtype == np.int64  # another buffer per dtype


def test_a_borrowed_workspace_is_never_lent_twice_at_once_and_comes_back():
    held = [scratch.borrow() for _ in range(3)]
    assert len({id(ws) for ws in held}) == 3
    for ws in held:
        scratch.give_back(ws)
    again = [scratch.borrow() for _ in range(3)]
    assert {id(ws) for ws in again} == {id(ws) for ws in held}
    for ws in again:
        scratch.give_back(ws)


def test_threads_borrowing_at_once_get_distinct_workspaces():
    seen, barrier, lock = [], threading.Barrier(4), threading.Lock()

    def borrower():
        ws = scratch.borrow()
        barrier.wait(timeout=10)  # all four hold one now
        with lock:
            seen.append(id(ws))
        barrier.wait(timeout=10)
        scratch.give_back(ws)

    threads = [threading.Thread(target=borrower) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(set(seen)) == 4


def test_a_workspace_grown_past_the_limit_is_not_kept():
    ws = scratch.borrow()
    ws.get("huge", scratch.KEEP_AT_MOST_BYTES // 8 + 1)
    assert ws.nbytes > scratch.KEEP_AT_MOST_BYTES
    scratch.give_back(ws)
    held = [scratch.borrow() for _ in range(len(scratch._idle) + 1)]
    assert all(other is not ws for other in held)
    for other in held:
        scratch.give_back(other)
