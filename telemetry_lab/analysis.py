"""Analysis of one telemetry file, streamed in bounded memory.

``analyse_file(uri, params)`` returns the result document, exactly what gets written.
The file is read in chunks; each detection frame carries ``params.halo`` rows of context
on both sides so that rolling windows give the same values as over the whole file, and
statistics, spectra and fault counts are accumulated across chunks.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from . import detect, report as report_mod, scratch
from .errors import DataError, Interrupted
from .faults import FaultCounter
from .io import Chunk, TelemetryFile
from .layout import Layout
from .params import AnalysisParams
from .scratch import Workspace
from .spectral import WelchAccumulator, dominant_frequency
from .stats import RunningStats

RESULT_KEYS = ("site_id", "region", "source", "run_id", "rows", "sample_rate_hz", "window",
               "params", "sensor_stats", "events", "spectral", "faults", "bearing", "report",
               "timings")


@dataclass
class Frame:
    """Output rows ``[start, stop)`` of a stream, with context rows ``[ctx_start, ctx_stop)``.

    A column is assembled from the chunks it spans only when asked for, so that the copy
    happens in the thread that analyses that column.
    """

    start: int
    stop: int
    ctx_start: int
    ctx_stop: int
    parts: list[Chunk]
    out_timestamps: np.ndarray | None = None

    def _gather(self, arrays, out: np.ndarray | None = None) -> np.ndarray:
        pieces = []
        for part, arr in zip(self.parts, arrays):
            lo = max(self.ctx_start - part.start, 0)
            hi = min(self.ctx_stop - part.start, len(part))
            if hi > lo:
                pieces.append(arr[lo:hi])
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces, out=None if out is None else out[:self.ctx_stop - self.ctx_start])

    def column(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """The column over the frame's context rows: a view when one chunk holds them,
        else a copy (into ``out`` if given, at least as long as the context)."""
        return self._gather([p.columns[name] for p in self.parts], out)

    @property
    def timestamps(self) -> np.ndarray:
        return self._gather([p.timestamps for p in self.parts])

    @property
    def out(self) -> slice:
        lo = self.start - self.ctx_start
        return slice(lo, lo + self.stop - self.start)


class Framer:
    """Turns consecutive chunks into frames with ``halo = (before, after)`` rows of context.

    Frames are at least ``frame_rows`` long (except the last), cover every row exactly
    once, and their context is cut only at the ends of the signal. Chunks are held (not
    copied) only while a later frame still needs them.
    """

    def __init__(self, *, halo: tuple[int, int], frame_rows: int):
        self.halo_before, self.halo_after = halo
        self.frame_rows = frame_rows
        self._parts: list[Chunk] = []
        self._end = 0
        self._done = 0

    def feed(self, chunk: Chunk) -> Iterator[Frame]:
        self._parts.append(chunk)
        self._end = chunk.start + len(chunk)
        if self._end - self._done >= self.frame_rows + self.halo_after:
            yield self._emit(self._end - self.halo_after)

    def finish(self) -> Iterator[Frame]:
        if self._end > self._done:
            yield self._emit(self._end)

    def _emit(self, stop: int) -> Frame:
        ctx_start = max(self._done - self.halo_before, self._parts[0].start)
        frame = Frame(self._done, stop, ctx_start, self._end, list(self._parts))
        frame.out_timestamps = frame.timestamps[frame.out]
        keep_from = stop - self.halo_before
        self._parts = [p for p in self._parts if p.start + len(p) > keep_from]
        self._done = stop
        return frame


class _Failures:
    """The failures of an analysis's lanes, each at the row where it happened.

    A lane that fails at row r makes the others stop once they are past r, and the failure
    at the lowest row is the one raised: the error that one thread reading every column
    would have met first, whatever the number of lanes. At one row they rank in the order
    one thread meets them: data that cannot be decoded, a value the file must not hold (a
    missing timestamp, a flag outside the bitfield), timestamps out of order, an analysis
    error; then lane order.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._found: list[tuple[int, int, int, BaseException]] = []
        self.stop_row: float = math.inf

    def add(self, row: int, exc: BaseException, *, rank: int = 0, lane: int = 0) -> None:
        with self._lock:
            self._found.append((row, rank, lane, exc))
            self.stop_row = min(self.stop_row, row)

    def stop_all(self) -> None:
        """Make every lane stop at its next chunk (an interrupt)."""
        self.stop_row = -math.inf

    def raise_first(self) -> None:
        if self._found:
            raise min(self._found, key=lambda f: f[:3])[3]


class _SharedTimestamps:
    """The primary lane's timestamps, handed to the other lanes.

    The timestamp column costs about six sensor columns to decode (int64, compressed), so
    one lane reads and checks it and the others take it from here, only ever timestamps
    that passed the checks. Lanes need not be read in the same chunks (a read error splits
    a lane's chunks where it happens). Chunks are forgotten once every lane has taken
    them; the primary lane waits while ``ahead`` are held, unless the lane furthest behind
    is itself waiting for rows not yet put (it cannot take what is held until then).
    """

    def __init__(self, readers: list[int], *, ahead: int = 3):
        self._cond = threading.Condition()
        self._ahead = ahead
        self._chunks: dict[int, np.ndarray] = {}  # first row -> timestamps, in row order
        self._put_rows = 0
        self._closed = False
        self._next_row = dict.fromkeys(readers, 0)  # lane -> first row it has not taken
        self._waiting: dict[int, int] = {}  # lane -> the row its wait ends at

    def _hindmost_waits(self) -> bool:
        behind = min(self._next_row.values())
        return any(self._next_row[lane] == behind and end > self._put_rows
                   for lane, end in self._waiting.items())

    def put(self, start: int, ts: np.ndarray) -> None:
        """Hand on the checked timestamps of the next rows (kept only if some lane reads)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._next_row or len(self._chunks) < self._ahead
                                or self._hindmost_waits())
            if self._next_row:
                self._chunks[start] = ts
            self._put_rows = start + len(ts)
            self._cond.notify_all()

    def take(self, lane: int, start: int, rows: int) -> np.ndarray | None:
        """Timestamps of rows ``[start, start + rows)``, the rows after those the lane took
        before; None when the primary lane ended (finished or failed) short of them."""
        end = start + rows
        with self._cond:
            self._waiting[lane] = end
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._put_rows >= end or self._closed)
            del self._waiting[lane]
            if self._put_rows < end:
                return None
            pieces = [ts[max(start - first, 0):end - first] for first, ts in self._chunks.items()
                      if first < end and first + len(ts) > start]
            self._next_row[lane] = end
            self._forget()
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def leave(self, lane: int) -> None:
        """A lane that takes no more (finished or failed)."""
        with self._cond:
            self._next_row.pop(lane, None)
            self._waiting.pop(lane, None)
            self._forget()

    def close(self) -> None:
        """The primary lane puts no more (finished or failed)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _forget(self) -> None:
        taken = min(self._next_row.values(), default=math.inf)
        for first in [f for f, ts in self._chunks.items() if f + len(ts) <= taken]:
            del self._chunks[first]
        self._cond.notify_all()


def _nanmean(rows: np.ndarray) -> np.ndarray:
    """Mean of each row's non-NaN values, NaN for a row with none.

    All-NaN buckets are expected (sensor dropouts, no reference yet) and must not warn:
    numpy.nanmean would, and silencing it with warnings.catch_warnings is not thread-safe.
    """
    ok = ~np.isnan(rows)
    count = ok.sum(axis=1)
    total = np.where(ok, rows, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(len(rows), np.nan), where=count > 0)


@dataclass
class ChannelTrace:
    """Decimated view of one channel for plots: per-bucket min/max of the signal and the
    mean of the rolling mean and rolling std, ``buckets`` buckets over the whole file."""

    bucket_rows: int
    t_ns: list = field(default_factory=list)
    lo: list = field(default_factory=list)
    hi: list = field(default_factory=list)
    mean: list = field(default_factory=list)
    std: list = field(default_factory=list)

    def update(self, offset: int, ts: np.ndarray, x: np.ndarray, mean: np.ndarray, std: np.ndarray):
        # Buckets are aligned to absolute row numbers so chunking does not move them.
        first = -(-offset // self.bucket_rows) * self.bucket_rows - offset
        if first:
            self._partial(ts[:first], x[:first], mean[:first], std[:first], merge=True)
        n = (len(x) - first) // self.bucket_rows * self.bucket_rows
        if n:
            b = self.bucket_rows
            sl = slice(first, first + n)
            shape = (-1, b)
            self.t_ns.extend(ts[sl][::b].tolist())
            self.lo.extend(np.fmin.reduce(x[sl].reshape(shape), axis=1).tolist())
            self.hi.extend(np.fmax.reduce(x[sl].reshape(shape), axis=1).tolist())
            self.mean.extend(_nanmean(mean[sl].reshape(shape)).tolist())
            self.std.extend(_nanmean(std[sl].reshape(shape)).tolist())
        rest = slice(first + n, len(x))
        if rest.start < rest.stop:
            self._partial(ts[rest], x[rest], mean[rest], std[rest], merge=False)

    def _partial(self, ts, x, mean, std, *, merge):
        lo, hi = float(np.fmin.reduce(x)), float(np.fmax.reduce(x))
        m, s = float(_nanmean(mean[None])[0]), float(_nanmean(std[None])[0])
        if merge and self.t_ns:
            self.lo[-1] = float(np.fmin(self.lo[-1], lo))
            self.hi[-1] = float(np.fmax(self.hi[-1], hi))
            self.mean[-1] = float(_nanmean(np.array([[self.mean[-1], m]]))[0])
            self.std[-1] = float(_nanmean(np.array([[self.std[-1], s]]))[0])
        else:
            self.t_ns.append(int(ts[0]))
            self.lo.append(lo)
            self.hi.append(hi)
            self.mean.append(m)
            self.std.append(s)


@dataclass
class Analysis:
    """The result document plus in-memory extras that renderers use (not serialised)."""

    document: dict
    psd: dict[str, tuple[np.ndarray, np.ndarray]]
    traces: dict[str, ChannelTrace]
    layout: Layout
    #: Envelope spectra for plots: channel -> BearingResult (spectrum and defect markers).
    envelope: dict = field(default_factory=dict)


def _select_channels(layout: Layout, params: AnalysisParams, uri: str) -> list[str]:
    if params.channels is None:
        return layout.channel_names
    unknown = [c for c in params.channels if c not in layout.channel_names]
    if unknown:
        raise DataError(f"params name channels the file does not have: {unknown}", file=uri)
    return list(params.channels)


def _machine_for(layout: Layout, channel: str) -> dict:
    """Shaft speed and bearing of a channel: its group's entry in ``machine["groups"]``,
    else the machine-wide values."""
    machine = dict(layout.machine)
    group = layout.channel(channel).group
    per_group = (machine.get("groups") or {}).get(group) or {}
    return {"shaft_hz": per_group.get("shaft_hz", machine.get("shaft_hz")),
            "bearing": per_group.get("bearing", machine.get("bearing"))}


def _bearing_accumulators(layout: Layout, names: list[str], fs: float, params: AnalysisParams,
                          uri: str) -> tuple[dict, dict]:
    """One accumulator per vibration channel, and why envelope analysis was skipped."""
    from .bearing import BearingAccumulator, BearingSpec
    from .errors import ParamsError

    accs, skipped = {}, {}
    for n in names:
        if layout.channel(n).role != "vibration":
            continue
        m = _machine_for(layout, n)
        spec = None
        if m["bearing"] is not None:
            try:
                spec = BearingSpec.from_dict(m["bearing"])
            except (ParamsError, TypeError, ValueError, AttributeError) as exc:
                raise DataError(f"layout metadata names a bad bearing: {exc}",
                                file=uri, channel=n) from None
        try:
            shaft_hz = None if m["shaft_hz"] is None else float(m["shaft_hz"])
        except (TypeError, ValueError):
            raise DataError(f"layout metadata has a bad shaft speed {m['shaft_hz']!r:.40}",
                            file=uri, channel=n) from None
        try:
            accs[n] = BearingAccumulator(fs, bearing=spec, shaft_hz=shaft_hz,
                                         settings=params.envelope_settings)
        except ParamsError as exc:
            # e.g. a 10-minute summary series: far too slow for envelope analysis.
            accs[n] = BearingAccumulator(fs)
            skipped[n] = exc.message
    return accs, skipped


#: Rough costs of the work of a lane, nanoseconds per row on one core (measured with
#: cProfile on a 500,000-row file; only their ratios matter): decoding a sensor column;
#: detection, statistics and events by each detector; a Welch spectrum; envelope
#: analysis; and the primary lane's decoding and checking of the timestamps and flags.
_NS_PER_ROW = {"decode": 3, "zscore": 3, "robust": 32, "welch": 10, "envelope": 23,
               "timestamps": 22}


def _lanes(names: list[str], threads: int, *, detector: str, spectral: set,
           bearing: set) -> list[list[str]]:
    """Channels split into at most ``threads`` lists of about equal work (costliest first,
    each to the least loaded list; the first list also carries the timestamps and flags).
    Each list keeps the channels' original order."""
    cost = {n: _NS_PER_ROW["decode"] + _NS_PER_ROW[detector] + _NS_PER_ROW["welch"] * (n in spectral)
            + _NS_PER_ROW["envelope"] * (n in bearing) for n in names}
    lanes: list[list[str]] = [[] for _ in range(max(1, min(threads, len(names))))]
    load = [0] * len(lanes)
    load[0] = _NS_PER_ROW["timestamps"]
    for n in sorted(names, key=lambda n: -cost[n]):
        i = load.index(min(load))
        lanes[i].append(n)
        load[i] += cost[n]
    order = {n: i for i, n in enumerate(names)}
    return [sorted(lane, key=order.get) for lane in lanes]


def _infer_sample_rate(ts: np.ndarray, uri: str) -> float:
    if len(ts) < 2:
        raise DataError("cannot infer the sample rate from fewer than 2 timestamps", file=uri)
    dt = float(np.median(np.diff(ts[: 100_000])))
    if dt <= 0:
        raise DataError("timestamps do not increase; cannot infer the sample rate", file=uri)
    return 1e9 / dt


def analyse(uri: str, params: AnalysisParams | None = None, *, run_id: str | None = None,
            trace_buckets: int = 0, should_stop=None, threads: int = 2) -> Analysis:
    """Analyse one file; see :func:`analyse_file`. Also returns plot data.

    ``trace_buckets > 0`` also collects a decimated trace of every channel for plots.
    ``should_stop`` is polled between chunks; when it returns True the analysis raises
    :class:`Interrupted`.
    """
    params = params or AnalysisParams()
    t0 = time.perf_counter()
    timings = {"read_s": 0.0, "compute_s": 0.0, "summary_s": 0.0}
    with TelemetryFile(uri) as tf:
        layout = tf.layout
        names = _select_channels(layout, params, uri)
        if params.detector == "zscore" and tf.rows < params.window:
            raise DataError(f"file has {tf.rows} rows, fewer than the rolling window "
                            f"({params.window} samples)", file=uri)
        if params.detector == "robust" and tf.rows <= params.min_reference + params.guard_samples:
            raise DataError(f"file has {tf.rows} rows, too few to build a reference of "
                            f"{params.min_reference} samples {params.guard_samples} samples "
                            "before any sample", file=uri)
        site_id, region = tf.site_id, tf.region
        spectral_names = [n for n in names if layout.channel(n).role in params.spectral_roles]
        stats = {n: RunningStats() for n in names}
        builders = {n: detect.EventBuilder(n, params.min_event_samples, params.merge_gap_samples,
                                           params.max_events_per_channel, params.z_threshold)
                    for n in names}
        bucket_rows = max(1, -(-tf.rows // trace_buckets)) if trace_buckets else 0
        traces = {n: ChannelTrace(bucket_rows) for n in names} if trace_buckets else {}
        faults = FaultCounter(layout.fault_bits) if layout.flags_column else None
        fs = layout.sample_rate_hz
        if fs is None:
            # From the first 100,000 intervals, whatever the row groups' size.
            fs = _infer_sample_rate(tf.leading_timestamps(100_001), uri)
        welch = {n: WelchAccumulator(fs, nperseg=params.welch_nperseg,
                                     overlap=params.welch_overlap, window=params.welch_window)
                 for n in spectral_names}
        bearing_accs, bearing_skipped = ({}, {})
        if params.bearing_diagnostics:
            bearing_accs, bearing_skipped = _bearing_accumulators(layout, names, fs, params, uri)
        flag_at = params.z_exit if params.z_exit is not None else params.z_threshold
        first_ns = last_ns = None

        def detect_channel(frame: Frame, name: str, ws: Workspace) -> None:
            x = frame.column(name, out=ws.get("frame", frame.ctx_stop - frame.ctx_start))
            o = frame.out
            if params.detector == "zscore":
                idx, z, center, var = detect.seed_scan(
                    x, params.window, flag_at, lo=o.start, hi=o.stop, ws=ws,
                    variance_floor=params.variance_floor, keep_series=bool(traces))
                scale = np.sqrt(var) if traces else None
            else:
                zo, center, scale = detect.robust_zscore(
                    x, window=params.window, guard=params.guard_samples,
                    short=params.short_window, energy=layout.channel(name).role in params.energy_roles,
                    variance_floor=params.variance_floor, min_reference=params.min_reference,
                    lo=o.start, hi=o.stop, ws=ws)
                idx = np.flatnonzero(zo > flag_at)
                z = zo[idx]
            ts = frame.out_timestamps
            # Statistics here, not on the chunk: the rows are in cache now.
            stats[name].update(x[o])
            builders[name].feed_flagged(idx, z, x[o], ts, frame.start)
            if traces:
                traces[name].update(frame.start, ts, x[o], center, scale)

        def first_bad_row(chunk: Chunk, prev_ns: int | None) -> int | None:
            ts = chunk.timestamps
            bad = np.flatnonzero(ts[1:] <= ts[:-1])
            if len(bad) or (prev_ns is not None and ts[0] <= prev_ns):
                return chunk.start + (int(bad[0]) + 1 if len(bad) else 0)
            return None

        def run_lane(lane: list[str], index: int) -> tuple[float, float]:
            """Read and analyse the lane's channels; the primary lane also checks the
            timestamps and counts fault flags. Returns seconds spent reading, analysing.

            Every channel's state is touched by its lane only, in row order, so results do
            not depend on the number of lanes. A failure is recorded with its row in
            ``failures`` and ends the lane.
            """
            nonlocal first_ns, last_ns
            primary = index == 0
            ws = scratch.borrow()  # buffers reused from channel to channel and file to file
            framer = Framer(halo=params.halo, frame_rows=params.chunk_rows)
            read_s = compute_s = 0.0
            prev_ns = None
            next_row = 0
            chunks = tf.iter_chunks(lane, batch_rows=min(params.chunk_rows, 65536), flags=primary,
                                    timestamps=primary)
            try:
                while next_row <= failures.stop_row:
                    if should_stop is not None and should_stop():
                        failures.add(-1, Interrupted("stopped by signal", file=uri), lane=index)
                        break
                    t = time.perf_counter()
                    try:
                        chunk = next(chunks, None)
                    except Exception as exc:  # noqa: BLE001 -- recorded, raised by analyse
                        bad_value = getattr(exc, "row", None) is not None
                        failures.add(next_row, exc, rank=1 if bad_value else 0, lane=index)
                        break
                    if chunk is not None and not primary:
                        chunk.timestamps = timestamps.take(index, chunk.start, len(chunk))
                        if chunk.timestamps is None:
                            break  # the primary lane stopped before these rows, and says why
                    t1 = time.perf_counter()
                    read_s += t1 - t
                    if chunk is None:
                        frames = list(framer.finish())
                    else:
                        if primary:
                            bad_row = first_bad_row(chunk, prev_ns)
                            checked = len(chunk) if bad_row is None else bad_row - chunk.start
                            # The rows before a bad one go to the other lanes too: they may
                            # hold an error one thread would have met first.
                            if checked:
                                timestamps.put(chunk.start, chunk.timestamps[:checked])
                            if bad_row is not None:
                                failures.add(bad_row, DataError(
                                    f"timestamps are not strictly increasing at row {bad_row}",
                                    file=uri, row=bad_row), rank=2, lane=index)
                                break
                            prev_ns = int(chunk.timestamps[-1])
                            if first_ns is None:
                                first_ns = int(chunk.timestamps[0])
                            if faults is not None:
                                faults.update(chunk.flags, chunk.timestamps)
                        frames = list(framer.feed(chunk))
                        next_row = chunk.start + len(chunk)
                    try:
                        for name in lane:
                            if chunk is not None:
                                x = chunk.columns[name]
                                if name in welch:
                                    welch[name].update(x, ws=ws)
                                if name in bearing_accs:
                                    bearing_accs[name].update(x)
                            for frame in frames:
                                detect_channel(frame, name, ws)
                    except Exception as exc:  # noqa: BLE001 -- recorded, raised by analyse
                        failures.add(next_row if chunk is None else chunk.start, exc, rank=3,
                                     lane=index)
                        break
                    compute_s += time.perf_counter() - t1
                    if chunk is None:
                        if primary:
                            last_ns = prev_ns
                        break
                    # Let go of the rows no frame needs before the next read: the reader's
                    # allocator hands the same, still-mapped memory to the next chunk.
                    chunk = frames = None
            except BaseException:  # KeyboardInterrupt when the lane runs in the main thread
                failures.stop_all()
                raise
            finally:
                chunks.close()
                scratch.give_back(ws)
                if primary:
                    timestamps.close()
                else:
                    timestamps.leave(index)
            return read_s, compute_s

        failures = _Failures()
        lanes = _lanes(names, threads, detector=params.detector, spectral=set(welch),
                       bearing=set(bearing_accs))
        timestamps = _SharedTimestamps(list(range(1, len(lanes))))
        if len(lanes) == 1:
            lane_times = [run_lane(lanes[0], 0)]
        else:
            # The primary lane runs in this thread, the others beside it.
            with ThreadPoolExecutor(max_workers=len(lanes) - 1) as pool:
                futures = [pool.submit(run_lane, lane, i) for i, lane in enumerate(lanes) if i]
                try:
                    lane_times = [run_lane(lanes[0], 0)] + [f.result() for f in futures]
                except BaseException:  # Ctrl-C: the lanes stop at their next chunk
                    failures.stop_all()
                    raise
        failures.raise_first()
        # Thread-seconds, summed over lanes: reading (waiting for data), and analysing.
        timings["read_s"] = sum(r for r, _ in lane_times)
        timings["compute_s"] = sum(c for _, c in lane_times)

        events = sorted((e for b in builders.values() for e in b.finish()),
                        key=lambda e: (e.start_ns, e.channel))
        # A score is infinite only where the detector's squares of huge samples overflow.
        unscorable = {e.channel for e in events if not math.isfinite(e.peak_z)}
        sensor_stats = {}
        for n in names:
            ch = layout.channel(n)
            sensor_stats[n] = {"role": ch.role, "unit": ch.unit, "label": ch.label,
                               "group": ch.group, **stats[n].to_dict(),
                               "event_count": builders[n].count}
            if stats[n].count == 0:
                raise DataError("channel has no valid samples (all NaN)", file=uri, channel=n)
            if not (math.isfinite(stats[n].minimum) and math.isfinite(stats[n].maximum)):
                # Infinities are missing samples, looked for where the footer's statistics
                # do not rule them out: these did, wrongly.
                raise DataError("channel holds infinite values in a row group whose footer "
                                "statistics give finite bounds (the program that wrote the "
                                "file is at fault)", file=uri, channel=n)
            if not (math.isfinite(stats[n].mean) and math.isfinite(stats[n].std)):
                raise DataError(f"channel values are too large to summarise in float64 (from "
                                f"{stats[n].minimum:.3g} to {stats[n].maximum:.3g})",
                                file=uri, channel=n)
            if n in unscorable:
                raise DataError(f"channel values are too large to score in float64 (the "
                                f"detector squares them; from {stats[n].minimum:.3g} to "
                                f"{stats[n].maximum:.3g})", file=uri, channel=n)

        t = time.perf_counter()
        spectral, psd = {}, {}
        for n, acc in welch.items():
            freqs, p = acc.result()
            psd[n] = (freqs, p)
            dom_hz, share = dominant_frequency(freqs, p)
            usable = bool(np.isfinite(p).all()) and len(p) > 1
            spectral[n] = {
                "role": layout.channel(n).role,
                "dominant_hz": dom_hz if usable else None,
                "dominant_share": share if usable else None,
                "total_power": float(p[1:].sum() * (freqs[1] - freqs[0])) if usable else None,
                "nperseg": acc.nperseg,
                "segments": int(acc.segments),
                "skipped_segments": int(acc.skipped_segments),
            }
        bearing_doc, envelope = None, {}
        if bearing_accs:
            from .bearing import bearing_verdict

            results = {n: acc.result() for n, acc in bearing_accs.items()}
            channels = {n: r.document for n, r in results.items()}
            envelope = {n: r for n, r in results.items() if r.spectrum is not None}
            bearing_doc = {"verdict": bearing_verdict(channels), "channels": channels,
                           "skipped": bearing_skipped or None}
        timings["summary_s"] += time.perf_counter() - t

    doc = {
        "site_id": site_id,
        "region": region,
        "source": uri,
        "run_id": run_id,
        "rows": tf.rows,
        "sample_rate_hz": fs,
        "window": {"start_ns": first_ns, "end_ns": last_ns},
        "params": params.to_dict(),
        "sensor_stats": sensor_stats,
        "events": [e.to_dict() for e in events],
        "spectral": spectral,
        "faults": faults.to_dict() if faults is not None else {},
        "bearing": bearing_doc,
        "report": None,
        "timings": timings,
    }
    t = time.perf_counter()
    doc["report"] = report_mod.make_report(doc, backend=params.report_backend)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    for k in timings:
        timings[k] = round(timings[k], 6)
    return Analysis(doc, psd, traces, layout, envelope)


def analyse_file(uri: str, params: AnalysisParams | None = None, *, run_id: str | None = None) -> dict:
    """Analyse one telemetry file and return its result document (JSON-ready).

    Parameters
    ----------
    uri : str
        Local path or ``s3://`` URI of a parquet file.
    params : AnalysisParams, optional
        Settings; ``AnalysisParams()`` (the default preset) if omitted.
    run_id : str, optional
        Recorded in the document.

    Returns
    -------
    dict
        Keys: ``site_id, region, source, run_id, rows, sample_rate_hz, window, params,
        sensor_stats, events, spectral, faults, report, timings``.
    """
    return analyse(uri, params, run_id=run_id).document
