"""Rendered incident reports: one self-contained HTML page per site, and a fleet index.

Output under a results root ``R`` (a folder or an ``s3://`` prefix)::

    R/reports/{run_id}/<stem>.html   site report of one run
    R/reports/latest/<stem>.html     newest site report of each file
    R/index.html                     index over R/results/latest, linking the latest reports

Design
------
* Site pages go through nbconvert (``HTMLExporter``, template ``reports/site_report``, which
  extends nbconvert's own ``lab``; inputs excluded) from a notebook built in memory whose
  cells already carry their outputs (``display_data`` with ``text/html``). No kernel is
  started: a kernel per file costs about 4 s on the 2-core machine, the target is at most
  1 s per file for everything here. The exporter's final BeautifulSoup pass is skipped (see
  ``_exporter``): it alone cost 1.2-1.5 s for a page with ~450 events.
* Plots are inline SVG drawn here from numpy arrays rather than with matplotlib. Measured on
  the 2-core machine with matplotlib 3.11 (Agg, SVG or PNG): one Axes costs 40-60 ms to draw,
  even reusing the figure, so a site with 15 flagged channels (the ``zscore`` detector flags
  most slow channels) plus 9 spectra took 1.2-1.8 s per file for the plots alone. Hand-made
  SVG costs a few milliseconds per plot, is drawn at the page's resolution (one column per
  pixel: 2000 trace buckets become ~700 points), weighs 10-40 kB per plot, and keeps class
  names and data ranges that tests and readers can find (``band``, ``mean``, ``dominant``,
  ``marker``, ``data-y-range``).
* Escaping: every fragment comes from Jinja macros (``reports/site_report/sections.html.j2``,
  ``reports/index/index.html.j2``) rendered with autoescape on, so site ids, regions, channel
  names, labels, units and findings are escaped wherever they appear. The SVG carries
  numbers and, in the envelope spectra, the defect-line labels and names, which are
  escaped where the SVG is built (:func:`envelope_svg`).
* Self-contained: the templates inline their CSS and (index only) a small script; nothing is
  loaded from the network, so pages open offline, from ``file://`` and from a bucket.

Templates are looked up, in order, in ``$TELEMETRY_LAB_REPORTS_DIR``, in the repository's
top-level ``reports/`` folder next to the package (source checkout or editable install), and
in ``<prefix>/share/telemetry-lab/reports`` (a non-editable install that ships the folder as
data files).
"""

from __future__ import annotations

import html
import json
import math
import os
import sysconfig
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from . import jobs, storage
from . import report as report_mod
from .analysis import Analysis, analyse
from .errors import EXIT_OK, DataError, ReportError, StorageError, TelemetryLabError
from .params import AnalysisParams

REPORTS_DIR_ENV = "TELEMETRY_LAB_REPORTS_DIR"
SITE_TEMPLATE = "site_report"
INDEX_TEMPLATE = "index/index.html.j2"
#: Buckets of the decimated traces that timelines are drawn from (as in jobs.process_file).
TRACE_BUCKETS = 2000
#: Health values worst first, as the index sorts them.
HEALTH_ORDER = ("critical", "at_risk", "degraded", "healthy")
SECTIONS = ("header", "findings", "events", "timelines", "spectra", "bearing", "faults",
            "sensor_stats", "run_info")
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
_TIMELINE_WIDTH = 880
_TIMELINE_PAD = (58, 8, 6, 20)  # left, right, top, bottom, px


# -- templates ------------------------------------------------------------------------------

def reports_dir() -> Path:
    """The folder holding the report templates (``site_report/``, ``index/``).

    Raises
    ------
    ReportError
        When no candidate folder has both templates; the message lists where it looked.
    """
    env = os.environ.get(REPORTS_DIR_ENV)
    candidates = [Path(env)] if env else [
        Path(__file__).resolve().parents[1] / "reports",
        Path(sysconfig.get_path("data")) / "share" / "telemetry-lab" / "reports",
    ]
    for folder in candidates:
        if (folder / SITE_TEMPLATE / "conf.json").is_file() and (folder / INDEX_TEMPLATE).is_file():
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise ReportError(f"report templates ({SITE_TEMPLATE}/conf.json, {INDEX_TEMPLATE}) not found "
                      f"in {where}; set ${REPORTS_DIR_ENV} to the repository's reports/ folder")


@lru_cache(maxsize=4)
def _jinja(root: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(root), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=_num, fixed=_fixed, iso=_iso)
    return env


@lru_cache(maxsize=4)
def _exporter(root: str):
    """One exporter per process: building one loads and compiles the template chain."""
    from nbconvert import HTMLExporter
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class ReportExporter(HTMLExporter):
        """``HTMLExporter`` without its last step, a BeautifulSoup round trip of the whole
        page that only adds ``alt`` to ``<img>`` and ``tabindex`` to cells. Its cost grows
        with the tag count: 1.2-1.5 s for a site with ~450 events (the table alone is ~4,000
        tags), more than everything else here together. Report pages have no ``<img>``.
        The filters registered are the two ``HTMLExporter.from_notebook_node`` registers."""

        def from_notebook_node(self, nb, resources=None, **kw):
            resources = self._init_resources(resources)
            self.register_filter("highlight_code", Highlight2HTML(parent=self))
            self.register_filter("filter_data_type", WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources))
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    return ReportExporter(template_name=SITE_TEMPLATE, extra_template_basedirs=[root],
                          exclude_input=True, exclude_input_prompt=True,
                          exclude_output_prompt=True)


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _fixed(value, decimals: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{decimals}f}"


def _iso(ns) -> str:
    if ns is None:
        return "-"
    ns = int(ns)
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{(ns % 1_000_000_000) // 1_000_000:03d}Z"


# -- channel severity ---------------------------------------------------------------------

def _limit_level(st: dict) -> str:
    """The rule level (low..critical) of one channel's statistics, as the rules reporter
    judges it (:data:`telemetry_lab.report.LIMITS`: same statistic, unit check and limits)."""
    lim = report_mod.LIMITS.get(st.get("role"))
    if not lim or st.get("unit") != lim["unit"] or not st.get("count"):
        return "low"
    value = math.hypot(st["std"], st["mean"]) if lim["stat"] == "rms" else st[lim["stat"]]
    level = "low"
    for name in ("moderate", "high", "critical"):
        if (value >= lim[name]) if lim["high_is_bad"] else (value <= lim[name]):
            level = name
    return level


def flagged_channels(doc: dict) -> list[dict]:
    """Channels that need a look, worst first.

    A channel is flagged when the detector found events on it or the rules put it above
    ``low``. Worst first means: higher rule level, then higher peak z of its listed events,
    then more events. This order picks the timelines shown and the index's worst channel.

    Returns
    -------
    list of dict
        ``name, level, peak_z, event_count, listed`` per flagged channel.
    """
    peak: dict[str, float] = {}
    listed: dict[str, int] = {}
    for ev in doc["events"]:
        peak[ev["channel"]] = max(peak.get(ev["channel"], 0.0), ev["peak_z"])
        listed[ev["channel"]] = listed.get(ev["channel"], 0) + 1
    out = []
    for name, st in doc["sensor_stats"].items():
        level = _limit_level(st)
        count = st.get("event_count", listed.get(name, 0))
        if level != "low" or count:
            out.append({"name": name, "level": level, "peak_z": peak.get(name, 0.0),
                        "event_count": count, "listed": listed.get(name, 0)})
    out.sort(key=lambda c: (report_mod.RISKS.index(c["level"]), c["peak_z"], c["event_count"]),
             reverse=True)
    return out


def _health_class(health) -> str:
    return health if health in HEALTH_ORDER else "unknown"


# -- SVG plots ----------------------------------------------------------------------------

class _Frame:
    """Linear map from data coordinates to the pixels of one plot area."""

    def __init__(self, xlim, ylim, *, width: int, height: int, pad: tuple[int, int, int, int]):
        left, right, top, bottom = pad
        self.width, self.height = width, height
        self.left, self.right = left, width - right
        self.top, self.bottom = top, height - bottom
        self.x0, self.x1 = _widen(*xlim)
        self.y0, self.y1 = _widen(*ylim)

    def x(self, v):
        return self.left + (np.asarray(v, dtype=float) - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, v):
        return self.bottom - (np.asarray(v, dtype=float) - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, xticks, yticks, xlabels, ylabels) -> list[str]:
        parts = []
        for t, label in zip(yticks, ylabels):
            py = float(self.y(t))
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.right}" y1="{py:.1f}" y2="{py:.1f}"/>'
                         f'<text x="{self.left - 4}" y="{py + 3:.1f}" text-anchor="end">{label}</text>')
        for t, label in zip(xticks, xlabels):
            px = float(self.x(t))
            parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{self.top}" y2="{self.bottom}"/>'
                         f'<text x="{px:.1f}" y="{self.bottom + 13}" text-anchor="middle">{label}</text>')
        parts.append(f'<rect class="frame" x="{self.left}" y="{self.top}" '
                     f'width="{self.right - self.left}" height="{self.bottom - self.top}"/>')
        return parts

    def svg(self, body: list[str], **attrs) -> str:
        # The data ranges let a reader (or a test) map pixels back to values exactly.
        attrs = {"data_x_range": f"{self.x0!r} {self.x1!r}",
                 "data_y_range": f"{self.y0!r} {self.y1!r}", **attrs}
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
        return (f'<svg class="plot" role="img" '
                f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
                f'height="{self.height}"{extra}>' + "".join(body) + "</svg>")


def _widen(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi > lo:
        return lo, hi
    half = abs(lo) * 0.05 or 1.0
    return lo - half, hi + half


def _nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[np.ndarray, int]:
    """Ticks at 1-2-5 multiples inside ``[lo, hi]``, and the decimals that label them."""
    span = hi - lo
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    ticks = np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)
    return ticks, max(0, -math.floor(math.log10(step)))


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs.tolist(), ys.tolist()))


def _runs(ok: np.ndarray) -> list[slice]:
    """Slices of the runs of True in ``ok`` (gaps are all-NaN buckets: sensor dropouts)."""
    edges = np.diff(ok.astype(np.int8), prepend=0, append=0)
    return [slice(a, b) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def _percentiles(a: np.ndarray, q: float) -> np.ndarray:
    finite = a[np.isfinite(a)]
    return np.percentile(finite, [q]) if len(finite) else finite


def _columns(n: int, width_px: int) -> int:
    return max(1, -(-n // max(width_px, 1)))


def _rebucket(a: np.ndarray, k: int, how) -> np.ndarray:
    if k == 1:
        return a
    pad = (-len(a)) % k
    a = np.concatenate([a, np.full(pad, np.nan)]).reshape(-1, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return how(a, axis=1)


def timeline_svg(trace, events: list[dict], *, start_ns: int, end_ns: int, z: float,
                 width: int = _TIMELINE_WIDTH, height: int = 150) -> str:
    """Timeline of one channel as inline SVG.

    Parameters
    ----------
    trace : ChannelTrace
        Per-bucket min/max of the signal and mean of the rolling mean and std.
    events : list of dict
        The channel's events (``start_ns``, ``end_ns``, ``peak_value``).
    start_ns, end_ns : int
        Data window, ns since the epoch; the x axis is seconds from ``start_ns``.
    z : float
        Threshold in rolling standard deviations; the band is mean +/- z * std.
    width, height : int
        Size, px.

    Returns
    -------
    str
        ``<svg class="plot timeline">`` with a ``signal`` envelope, ``band``, ``mean`` line,
        ``event`` spans and ``event-mark`` ticks at their starts.
    """
    pad = _TIMELINE_PAD
    t = (np.asarray(trace.t_ns, dtype=np.int64) - start_ns) / 1e9
    k = _columns(len(t), width - pad[0] - pad[1])
    t = t[::k]
    lo = _rebucket(np.asarray(trace.lo, dtype=float), k, np.nanmin)
    hi = _rebucket(np.asarray(trace.hi, dtype=float), k, np.nanmax)
    mean = _rebucket(np.asarray(trace.mean, dtype=float), k, np.nanmean)
    std = _rebucket(np.asarray(trace.std, dtype=float), k, np.nanmean)
    upper, lower = mean + z * std, mean - z * std
    # The whole signal is always in view; the band only up to its 1st/99th percentiles,
    # because at the file's ends the zero-padded window drags mean and std far off and
    # would squash the rest of the plot. What falls outside is clipped to the frame.
    values = np.concatenate([lo, hi, _percentiles(lower, 1), _percentiles(upper, 99)])
    values = values[np.isfinite(values)]
    ylim = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    margin = 0.04 * (ylim[1] - ylim[0])
    duration = max((end_ns - start_ns) / 1e9, float(t[-1]) if len(t) else 0.0)
    f = _Frame((0.0, duration), (ylim[0] - margin, ylim[1] + margin), width=width, height=height,
               pad=pad)
    xt, xd = _nice_ticks(f.x0, f.x1, 8)
    yt, yd = _nice_ticks(f.y0, f.y1, 4)
    body = f.axes(xt, yt, [f"{v:.{xd}f}" for v in xt], [f"{v:.{yd}f}" for v in yt])
    # One column per pixel, so x in px is also the merge resolution for event spans.
    px = f.x(t)
    y_up, y_lo, y_mean = (np.clip(f.y(v), f.top, f.bottom) for v in (upper, lower, mean))
    for s in _runs(np.isfinite(upper) & np.isfinite(lower)):
        body.append(f'<polygon class="band" points="{_points(np.r_[px[s], px[s][::-1]], np.r_[y_up[s], y_lo[s][::-1]])}"/>')
    for s in _runs(np.isfinite(lo) & np.isfinite(hi)):
        body.append(f'<polygon class="signal" points="{_points(np.r_[px[s], px[s][::-1]], np.r_[f.y(hi[s]), f.y(lo[s])[::-1]])}"/>')
    for s in _runs(np.isfinite(mean)):
        body.append(f'<polyline class="mean" points="{_points(px[s], y_mean[s])}"/>')
    spans: list[list[float]] = []
    for ev in sorted(events, key=lambda e: e["start_ns"]):
        a = float(f.x((ev["start_ns"] - start_ns) / 1e9))
        b = max(float(f.x((ev["end_ns"] - start_ns) / 1e9)), a + 1.5)
        if spans and a <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    for a, b in spans:
        body.append(f'<rect class="event" x="{a:.1f}" y="{f.top}" width="{b - a:.1f}" height="{f.bottom - f.top}"/>')
    # A tick at each event's start along the top edge, so that one-sample events stay
    # visible; not at the peak value, whose time the event record does not keep.
    for x in sorted({round(float(f.x((e["start_ns"] - start_ns) / 1e9))) for e in events}):
        body.append(f'<path class="event-mark" d="M{x - 3},{f.top} L{x + 3},{f.top} L{x},{f.top + 6} Z"/>')
    return f.svg(body, data_events=len(events))


def psd_svg(freqs: np.ndarray, psd: np.ndarray, dominant_hz: float | None, *, width: int = 320,
            height: int = 190) -> str:
    """Welch PSD of one channel as inline SVG, log power against linear frequency.

    Parameters
    ----------
    freqs : ndarray
        Bin frequencies, Hz.
    psd : ndarray
        Power spectral density, unit**2/Hz. The DC bin is left out, as for the dominant
        frequency.
    dominant_hz : float or None
        Marked with a dashed ``dominant`` line (its ``data-hz``) and a labelled triangle.
    width, height : int
        Size, px.

    Returns
    -------
    str
        ``<svg class="plot psd">`` with a ``psd`` path. Bins are merged per pixel column
        keeping each column's strongest bin, so peaks (the dominant one included) keep their
        height and frequency.
    """
    pad = (40, 14, 16, 20)
    f_hz, p = np.asarray(freqs[1:], dtype=float), np.asarray(psd[1:], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log10(p), np.nan)
    k = _columns(len(logp), width - pad[0] - pad[1])
    pad_n = (-len(logp)) % k
    grid = np.concatenate([logp, np.full(pad_n, np.nan)]).reshape(-1, k)
    keep = ~np.all(np.isnan(grid), axis=1)
    pick = np.nanargmax(np.where(np.isnan(grid[keep]), -np.inf, grid[keep]), axis=1)
    idx = np.flatnonzero(keep) * k + pick
    xs, ys = f_hz[idx], logp[idx]
    ylim = (float(ys.min()), float(ys.max())) if len(ys) else (0.0, 1.0)
    xmax = float(f_hz[-1]) if len(f_hz) else 1.0
    margin = 0.05 * (ylim[1] - ylim[0])
    f = _Frame((0.0, xmax), (ylim[0] - margin, ylim[1] + margin), width=width, height=height, pad=pad)
    xt, xd = _nice_ticks(f.x0, f.x1, 5)
    yt, yd = _nice_ticks(f.y0, f.y1, 4)
    ylabels = [f"1e{v:.0f}" if yd == 0 else f"{10 ** v:.2g}" for v in yt]
    body = f.axes(xt, yt, [f"{v:.{xd}f}" for v in xt], ylabels)
    if len(xs):
        pts = _points(f.x(xs), f.y(ys)).split(" ")
        body.append(f'<path class="psd" d="M{pts[0]} L{" ".join(pts[1:])}"/>')
    attrs = {}
    if dominant_hz is not None and math.isfinite(dominant_hz):
        x = float(f.x(dominant_hz))
        body.append(f'<line class="dominant" x1="{x:.1f}" x2="{x:.1f}" y1="{f.top}" y2="{f.bottom}" '
                    f'data-hz="{dominant_hz!r}"/>'
                    f'<path class="dominant-mark" d="M{x - 4:.1f},{f.top - 7} L{x + 4:.1f},{f.top - 7} L{x:.1f},{f.top} Z"/>'
                    f'<text class="dominant-label" x="{x + 6:.1f}" y="{f.top - 3}">{dominant_hz:.1f} Hz</text>')
        attrs["data_dominant_hz"] = repr(dominant_hz)
    return f.svg(body, **attrs)


def envelope_svg(freqs: np.ndarray, amplitude: np.ndarray, markers: list[dict], *,
                 highlight: str | None = None, width: int = _TIMELINE_WIDTH,
                 height: int = 230) -> str:
    """Envelope spectrum of one vibration channel with its defect lines, as inline SVG.

    Parameters
    ----------
    freqs : ndarray
        Frequencies from 0 to the envelope range, Hz. The DC bin (the mean of the squared
        envelope) and the two next to it, its window's main lobe, are left out: they would
        set the scale and flatten every defect line.
    amplitude : ndarray
        Squared-envelope amplitude, channel unit**2, linear scale.
    markers : list of dict
        Defect lines (``label, defect, harmonic, nominal_hz, hz``), each drawn as a dashed
        vertical ``marker`` line at ``hz`` (where the comb found its peak) with its label
        above the plot; labels that would overlap go to further rows.
    highlight : str, optional
        Defect whose lines also get the class ``verdict`` (the channel's verdict).
    width, height : int
        Size, px (the top padding grows by a row per row of labels).

    Returns
    -------
    str
        ``<svg class="plot">`` with an ``envelope`` path (per pixel column the
        strongest bin, so lines keep their height and frequency) and one
        ``<line class="marker" data-hz data-label data-defect data-harmonic>`` per marker.
        Labels and defect names are HTML-escaped here.
    """
    f_hz, a = np.asarray(freqs[3:], dtype=float), np.asarray(amplitude[3:], dtype=float)
    left, right, bottom = 58, 8, 20
    xmax = float(f_hz[-1]) if len(f_hz) else 1.0
    # Labels are packed greedily into rows (about 5.6 px per character at 10 px): the
    # lines of different defects can coincide (3 x BPFO and 2 x BPFI on the CWRU bearing).
    scale = (width - left - right) / xmax
    rows: list[float] = []
    placed = []
    for m in sorted(markers, key=lambda m: m["hz"]):
        x = left + m["hz"] * scale
        half = 2.8 * len(m["label"]) + 3
        row = next((i for i, end in enumerate(rows) if x - half > end), len(rows))
        rows[row:row + 1] = [x + half]
        placed.append((m, row))
    top = 8 + 12 * max(len(rows), 1)
    k = _columns(len(a), width - left - right)
    grid = np.concatenate([a, np.full((-len(a)) % k, np.nan)]).reshape(-1, k)
    keep = ~np.all(np.isnan(grid), axis=1)
    pick = np.nanargmax(np.where(np.isnan(grid[keep]), -np.inf, grid[keep]), axis=1)
    idx = np.flatnonzero(keep) * k + pick
    xs, ys = f_hz[idx], a[idx]
    ymax = float(ys.max()) if len(ys) else 1.0
    f = _Frame((0.0, xmax), (0.0, ymax * 1.05), width=width, height=height + top - 20,
               pad=(left, right, top, bottom))
    xt, xd = _nice_ticks(f.x0, f.x1, 10)
    yt, yd = _nice_ticks(f.y0, f.y1, 4)
    body = f.axes(xt, yt, [f"{v:.{xd}f}" for v in xt], [f"{v:.3g}" for v in yt])
    if len(xs):
        pts = _points(f.x(xs), f.y(ys)).split(" ")
        body.append(f'<path class="envelope" d="M{pts[0]} L{" ".join(pts[1:])}"/>')
    for m, row in placed:
        x = float(f.x(m["hz"]))
        extra = " verdict" if highlight is not None and m["defect"] == highlight else ""
        label = html.escape(str(m["label"]), quote=True)
        body.append(f'<line class="marker{extra}" x1="{x:.1f}" x2="{x:.1f}" y1="{f.top}" y2="{f.bottom}" '
                    f'data-hz="{float(m["hz"])!r}" data-label="{label}" '
                    f'data-defect="{html.escape(str(m["defect"]), quote=True)}" '
                    f'data-harmonic="{int(m["harmonic"])}"/>'
                    f'<text class="marker-label{extra}" x="{x:.1f}" y="{f.top - 4 - 12 * row}" '
                    f'text-anchor="middle">{label}</text>')
    return f.svg(body, data_markers=len(markers))


# -- the site report ----------------------------------------------------------------------

def _bearing_context(analysis: Analysis, meta: Callable[[str], dict]) -> dict | None:
    """The bearing section: overall verdict, indicators of every vibration channel, and an
    envelope-spectrum plot for each channel that has one."""
    doc = analysis.document
    b = doc.get("bearing")
    if not b:
        return None
    skipped = b.get("skipped") or {}
    channels = b.get("channels") or {}
    rows, plots = [], []
    for name, ch in channels.items():
        v = ch.get("verdict") or {}
        env = ch.get("envelope")
        note = skipped.get(name) or ch.get("note") or ""
        rows.append({"name": name, **meta(name), "shaft_hz": ch.get("shaft_hz"),
                     "group": doc["sensor_stats"].get(name, {}).get("group") or "",
                     "rms": ch.get("rms"), "peak": ch.get("peak"),
                     "crest_factor": ch.get("crest_factor"), "kurtosis": ch.get("kurtosis"),
                     "defect": v.get("defect"), "score_db": v.get("score_db"), "note": note})
        if env is None:
            continue
        result = analysis.envelope.get(name)
        if result is None or result.spectrum is None:
            raise ReportError("no envelope spectrum for a channel with envelope analysis",
                              file=doc.get("source"), channel=name)
        sp = result.spectrum
        plots.append({"name": name, **meta(name), "defect": v.get("defect"),
                      "score_db": v.get("score_db"), "band_hz": env["band_hz"],
                      "band_kurtosis": env.get("band_kurtosis"), "selection": env.get("selection"),
                      "resolution_hz": env.get("resolution_hz"), "segments": env.get("segments"),
                      "shaft_hz": ch.get("shaft_hz"),
                      "svg": _markup(envelope_svg(sp.freqs, sp.amplitude, result.markers,
                                                  highlight=v.get("defect")))})
    overall = dict(b.get("verdict") or {})
    decider = channels.get(overall.get("channel")) or {}
    runner_up = (decider.get("verdict") or {}).get("runner_up")
    bearing = next((c["bearing"] for c in channels.values() if c.get("bearing")), None)
    threshold = next((c["verdict"]["threshold_db"] for c in channels.values() if c.get("verdict")),
                     None)
    return {"verdict": overall, "runner_up": runner_up, "threshold_db": threshold,
            "bearing_name": bearing["name"] if bearing else None, "rows": rows, "plots": plots}


def _site_context(analysis: Analysis) -> dict:
    doc = analysis.document
    rep = doc.get("report") or {}
    params = doc["params"]
    start_ns, end_ns = doc["window"]["start_ns"], doc["window"]["end_ns"]
    z = params["z_threshold"]
    fs = doc.get("sample_rate_hz") or 0.0
    stats = doc["sensor_stats"]
    layout_channels = {c.name: c for c in analysis.layout.channels}

    def meta(name: str) -> dict:
        st = stats.get(name, {})
        ch = layout_channels.get(name)
        return {"label": st.get("label") or (ch.label if ch else ""),
                "unit": st.get("unit") or (ch.unit if ch else ""),
                "role": st.get("role") or (ch.role if ch else "")}

    by_channel: dict[str, list[dict]] = {}
    for ev in doc["events"]:
        by_channel.setdefault(ev["channel"], []).append(ev)
    events = [{**ev, **meta(ev["channel"]),
               "duration_s": (ev["end_ns"] - ev["start_ns"]) / 1e9 + (1 / fs if fs else 0.0)}
              for ev in doc["events"]]

    flagged = flagged_channels(doc)
    timelines = []
    column_s = None
    for ch in flagged:
        trace = analysis.traces.get(ch["name"])
        if trace is None:
            raise ReportError("no plot trace for a flagged channel; analyse with trace_buckets > 0",
                              file=doc.get("source"), channel=ch["name"])
        if fs:
            plot_px = _TIMELINE_WIDTH - _TIMELINE_PAD[0] - _TIMELINE_PAD[1]
            column_s = trace.bucket_rows * _columns(len(trace.t_ns), plot_px) / fs
        svg = timeline_svg(trace, by_channel.get(ch["name"], []), start_ns=start_ns,
                           end_ns=end_ns, z=z)
        timelines.append({**ch, **meta(ch["name"]), "svg": _markup(svg)})

    spectra = []
    for name, info in doc.get("spectral", {}).items():
        if name not in analysis.psd:
            raise ReportError("no PSD for a spectral channel in the analysis", file=doc.get("source"),
                              channel=name)
        freqs, p = analysis.psd[name]
        spectra.append({"name": name, **meta(name), "dominant_hz": info.get("dominant_hz"),
                        "dominant_share": info.get("dominant_share") or 0.0,
                        "svg": _markup(psd_svg(freqs, p, info.get("dominant_hz")))})

    bearing = _bearing_context(analysis, meta)

    faults = sorted(({"name": name, **info} for name, info in doc.get("faults", {}).items()),
                    key=lambda f: (-f["samples"], f["bit"]))
    most = max((f["samples"] for f in faults), default=0)
    for f in faults:
        f["duration_s"] = f["samples"] / fs if fs else None
        f["bar_px"] = round(120 * f["samples"] / most) if most else 0

    flagged_names = {c["name"] for c in flagged}
    stats_rows = [{"name": name, **st, **meta(name), "flagged": name in flagged_names}
                  for name, st in stats.items()]
    risks = [(k, rep[k]) for k in ("bearing_wear_risk", "lubrication_risk", "thermal_risk") if k in rep]
    generated = rep.get("generated_by") or {}
    health = rep.get("equipment_health", "unknown")
    return {
        "site_id": doc.get("site_id") or "(no site id)",
        "region": doc.get("region") or "-",
        "run_id": doc.get("run_id"),
        "source": doc.get("source"),
        "rows": doc["rows"],
        "sample_rate_hz": fs,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "duration_s": (end_ns - start_ns) / 1e9 if start_ns is not None else None,
        "health": health,
        "health_class": _health_class(health),
        "levels": report_mod.RISKS,
        "risks": risks,
        "confidence": rep.get("confidence", "-"),
        "vibration_anomaly": rep.get("vibration_anomaly", False),
        "generated_by": ", ".join(f"{k}={v}" for k, v in generated.items()) or "-",
        "findings": rep.get("key_findings", []),
        "actions": rep.get("recommended_actions", []),
        "events": events,
        "events_total": sum(st.get("event_count", 0) for st in stats.values()),
        "max_events": params.get("max_events_per_channel"),
        "z_threshold": z,
        "window": params.get("window"),
        "detector": params.get("detector", "zscore"),
        "column_s": column_s,
        "timelines": timelines,
        "spectra": spectra,
        "bearing": bearing,
        "spectral_roles": params.get("spectral_roles") or [],
        "welch": (f"{params.get('welch_window')} window, {params.get('welch_nperseg')} samples per "
                  f"segment, {params.get('welch_overlap', 0) * 100:.0f}% overlap"),
        "faults": faults,
        "stats": stats_rows,
        "params": [(k, json.dumps(v)) for k, v in params.items()],
        "timings": list(doc.get("timings", {}).items()),
    }


def _markup(text: str):
    import markupsafe

    return markupsafe.Markup(text)


def build_notebook(analysis: Analysis):
    """The site report as an in-memory notebook: one code cell per section whose output is
    the section's HTML, already rendered (nothing to execute)."""
    import nbformat

    ctx = _site_context(analysis)
    macros = _jinja(str(reports_dir())).get_template(f"{SITE_TEMPLATE}/sections.html.j2").module
    cells = []
    for name in SECTIONS:
        if name == "bearing" and ctx["bearing"] is None:
            continue  # no vibration channel, or bearing diagnostics turned off
        out = nbformat.v4.new_output("display_data", data={
            "text/html": str(getattr(macros, name)(ctx)),
            "text/plain": f"[{name} section: HTML only]",
        })
        # Fixed cell ids keep the page a pure function of the analysis (nbformat would
        # draw random ones), so a re-render of the same result gives the same bytes.
        cells.append(nbformat.v4.new_code_cell(
            source=f"# {name}: pre-rendered by telemetry_lab.render.build_notebook",
            outputs=[out], metadata={"tags": [f"section-{name}"]}, id=f"section-{name}"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["title"] = f"Incident report: {ctx['site_id']} ({ctx['health']})"
    return nb


def render_site_report(analysis: Analysis) -> str:
    """The self-contained HTML report of one analysed file.

    Parameters
    ----------
    analysis : Analysis
        From :func:`telemetry_lab.analysis.analyse` with ``trace_buckets > 0``.

    Returns
    -------
    str
        The page: health badge, findings and actions, events table, timelines of flagged
        channels, PSD of each spectral channel, bearing diagnostics (verdict, indicators,
        envelope spectra with defect lines) when the document has them, fault flags, sensor
        statistics, params and timings.

    Raises
    ------
    ReportError
        Templates missing, or the analysis lacks traces or spectra the page needs.
    """
    body, _ = _exporter(str(reports_dir())).from_notebook_node(build_notebook(analysis))
    return body


def _write_html(uri: str, text: str) -> None:
    """Write a page atomically; on S3 with a ``text/html`` content type, so that a browser
    opening it from the bucket shows it instead of downloading it."""
    data = text.encode("utf-8")
    if not storage.is_s3(uri):
        storage.write_bytes(uri, data)
        return
    fs, path = storage.resolve(uri)
    try:
        with fs.open_output_stream(path, metadata={"Content-Type": HTML_CONTENT_TYPE}) as f:
            f.write(data)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot write: {exc}", file=uri) from None


def write_site_reports(paths: jobs.Paths, stem: str, analysis: Analysis, *,
                       latest: bool = True) -> list[str]:
    """Render one site's report and write it to ``reports/{run_id}/<stem>.html`` and (when
    ``latest``) ``reports/latest/<stem>.html``, each atomically. Returns the URIs written."""
    text = render_site_report(analysis)
    uris = [paths.report(stem)] + ([paths.report(stem, latest=True)] if latest else [])
    for uri in uris:
        _write_html(uri, text)
    return uris


def site_report_hook(paths: jobs.Paths) -> Callable[[str, Analysis], None]:
    """An ``on_result`` callback for :func:`telemetry_lab.jobs.process_file` that writes the
    site report right after the result document."""
    def hook(stem: str, analysis: Analysis) -> None:
        write_site_reports(paths, stem, analysis)
    return hook


# -- re-rendering from a result document --------------------------------------------------

def _read_doc(uri: str) -> dict:
    try:
        doc = json.loads(storage.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"result document is not valid JSON: {exc}", file=uri) from None
    if not isinstance(doc, dict) or not {"source", "params", "events", "window"} <= set(doc):
        raise DataError("not a result document (needs source, params, events, window)", file=uri)
    return doc


def analysis_from_result(result_uri: str) -> Analysis:
    """Rebuild the plot data of a result document by analysing its source again.

    The source is analysed with the document's params (report backend forced to ``rules``:
    the stored report is kept, so a model-written report is neither re-bought nor changed),
    and the stored document is returned with the fresh traces, spectra and envelope spectra.

    Raises
    ------
    DataError
        The document is unreadable, or the re-analysis does not reproduce its rows, window
        and events (the source or the analysis changed since; re-run the analysis).
    """
    doc = _read_doc(result_uri)
    params = AnalysisParams.from_dict(doc["params"], source=result_uri)
    fresh = analyse(doc["source"], params.replace(report_backend="rules"), run_id=doc.get("run_id"),
                    trace_buckets=TRACE_BUCKETS)
    for key in ("rows", "window", "events"):
        if fresh.document[key] != doc[key]:
            raise DataError(f"re-analysis of the source does not reproduce the result's {key} "
                            f"(source or analysis changed since); re-run the analysis",
                            file=result_uri)
    return Analysis(doc, fresh.psd, fresh.traces, fresh.layout, fresh.envelope)


def render_from_result(result_uri: str) -> str:
    """The HTML report of a stored result document; see :func:`analysis_from_result`."""
    return render_site_report(analysis_from_result(result_uri))


def _stem(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")


def run_result_uris(results_root: str, run_id: str | None) -> list[str]:
    """Result documents of a run (``results/{run_id}/*.json``, not its errors or summaries),
    or of ``results/latest`` when ``run_id`` is None."""
    folder = storage.join(results_root, "results", run_id or "latest")
    return [uri for uri, _ in _list_json(folder)]


def write_run_reports(results_root: str, run_id: str | None = None, *,
                      log: Callable[[str], None] = print) -> int:
    """Re-render the site reports of a run (or of ``results/latest``) from the documents.

    A report goes to ``reports/{doc run_id}/`` and also to ``reports/latest/`` when the
    latest result of that stem is this run's. One failing site does not stop the others.

    Returns
    -------
    int
        Exit code: 0, or that of the first failure.
    """
    if run_id is not None:
        jobs.check_run_id(run_id)
    uris = run_result_uris(results_root, run_id)
    if not uris:
        raise StorageError(f"no result documents under "
                           f"{storage.join(results_root, 'results', run_id or 'latest')}")
    code = EXIT_OK
    for uri in uris:
        stem = _stem(uri)
        try:
            analysis = analysis_from_result(uri)
            doc_run = run_id or analysis.document.get("run_id")
            if doc_run is None:
                raise DataError("result document has no run_id; cannot place its report", file=uri)
            latest = run_id is None or _latest_run_id(results_root, stem) == run_id
            written = write_site_reports(jobs.Paths(results_root, doc_run), stem, analysis,
                                         latest=latest)
            log(f"OK   {stem} -> {', '.join(written)}")
        except TelemetryLabError as exc:
            log(f"FAIL {stem} {type(exc).__name__}: {exc}")
            code = code or exc.exit_code
    return code


def _latest_run_id(results_root: str, stem: str) -> str | None:
    uri = storage.join(results_root, "results", "latest", f"{stem}.json")
    if not storage.exists(uri):
        return None
    return _read_doc(uri).get("run_id")


# -- the index ----------------------------------------------------------------------------

def _list_json(folder: str) -> list[tuple[str, datetime | None]]:
    """``(uri, modified)`` of the result documents directly in ``folder``, sorted; hidden
    and ``_``-prefixed files are left out."""
    return [(storage.join(folder, name), mtime) for name, mtime in storage.list_folder(folder)
            if name.endswith(".json") and name[:1] not in "._"]


def _list_names(folder: str) -> set[str]:
    return {name for name, _ in storage.list_folder(folder)}


def _index_row(uri: str, mtime: datetime | None, reports: set[str]) -> dict:
    stem = _stem(uri)
    when = (mtime.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if mtime else "-")
    href = f"reports/latest/{quote(stem, safe='')}.html" if f"{stem}.html" in reports else None
    try:
        doc = _read_doc(uri)
        health = (doc.get("report") or {}).get("equipment_health", "unknown")
        worst = flagged_channels(doc)[:1]
    except (TelemetryLabError, KeyError, TypeError) as exc:
        return {"site_id": stem, "region": "-", "health": "unknown", "health_class": "unknown",
                "events": "-", "worst_channel": None, "worst_detail": "", "report_time": when,
                "href": href, "error": f"unreadable result: {exc}"}
    detail = ""
    if worst:
        w = worst[0]
        label = doc["sensor_stats"].get(w["name"], {}).get("label") or ""
        detail = f"{label}; rule level {w['level']}; {w['event_count']} events"
        if w["peak_z"]:
            detail += f", peak z {w['peak_z']:.1f}"
    return {"site_id": doc.get("site_id") or stem, "region": doc.get("region") or "-",
            "health": health, "health_class": _health_class(health),
            "events": sum(st.get("event_count", 0) for st in doc["sensor_stats"].values()),
            "worst_channel": worst[0]["name"] if worst else None, "worst_detail": detail,
            "report_time": when, "href": href, "error": None}


def index_rows(results_root: str) -> list[dict]:
    """One row per document in ``results/latest``, worst health first, then by site id.

    The report time is when the latest result was written (object modification time). A
    document that cannot be read still gets a row, marked unreadable, so it is not lost.
    """
    latest = storage.join(results_root, "results", "latest")
    files = _list_json(latest)
    if not files:
        raise StorageError(f"no result documents under {latest}")
    reports = _list_names(storage.join(results_root, "reports", "latest"))
    # Reading is latency-bound on S3 (one GET per site); a few threads hide it.
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(lambda f: _index_row(f[0], f[1], reports), files))
    order = {h: i for i, h in enumerate(HEALTH_ORDER)}
    rows.sort(key=lambda r: (order.get(r["health"], len(order)), r["site_id"]))
    return rows


def render_index(results_root: str) -> str:
    """The self-contained ``index.html`` over ``results/latest`` of a results root: one row
    per site (site, region, health badge, event count, worst channel, report time) linking
    to ``reports/latest/<stem>.html``, with client-side filters for site id, region and
    health."""
    rows = index_rows(results_root)
    # Every health is offered as a filter and counted, present or not; unknown only if seen.
    counts = [(h, sum(1 for r in rows if r["health"] == h)) for h in HEALTH_ORDER]
    counts += [("unknown", n)] if (n := sum(1 for r in rows if r["health_class"] == "unknown")) else []
    return _jinja(str(reports_dir())).get_template(INDEX_TEMPLATE).render(
        rows=rows, counts=counts, healths=[h for h, _ in counts],
        regions=sorted({r["region"] for r in rows}),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"))


def write_index(results_root: str) -> str:
    """Write ``index.html`` at the results root (atomically); returns its URI."""
    uri = storage.join(results_root, "index.html")
    _write_html(uri, render_index(results_root))
    return uri


# -- command line -------------------------------------------------------------------------

def cmd_report_index(a) -> int:
    uri = write_index(a.results)
    print(f"index written to {uri}")
    return EXIT_OK


def cmd_report_site(a) -> int:
    return write_run_reports(a.results, a.run_id, log=lambda line: print(line, flush=True))


def add_report_parser(subparsers) -> None:
    """Register ``report index --results URI`` and ``report site --results URI [--run-id ID]``
    on the ``telemetry-lab`` sub-command parsers."""
    r = subparsers.add_parser("report", help="render HTML reports from results")
    rs = r.add_subparsers(dest="report_command", required=True)
    i = rs.add_parser("index", help="write index.html over results/latest of a results root")
    i.add_argument("--results", required=True, help="results root (folder or s3:// prefix)")
    i.set_defaults(func=cmd_report_index)
    s = rs.add_parser("site", help="re-render the site reports of a run from its result "
                                   "documents (analyses each source again for the plots)")
    s.add_argument("--results", required=True, help="results root (folder or s3:// prefix)")
    s.add_argument("--run-id", help="run to render (default: every site in results/latest)")
    s.set_defaults(func=cmd_report_site)
