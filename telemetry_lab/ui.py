"""Plots and widget panels for the analyst notebooks (``notebooks/01``-``03``).

Notebooks stay thin: they import this module, call a function or build a panel, and
display it. Every panel is a class whose callbacks are plain methods (``on_change``,
``save_params``, ``submit``, ``refresh_progress``...), so tests drive them by calling them;
the widgets only forward to those methods. Callbacks that a button or slider fires report
problems in the panel's ``status`` line instead of raising, because an exception raised
in a widget callback disappears into the kernel's log.

Plots are drawn on :class:`matplotlib.figure.Figure` objects without pyplot, so nothing
here depends on the backend: notebooks display them inline, tests draw them with Agg.
Panels show their plot as a PNG in an ``ipywidgets.Image``.

Precision and recall against the generator's truth sidecars use the matching rules of
:func:`telemetry_lab.evaluate.match_events`.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from html import escape
from typing import Callable, Sequence

import numpy as np

from . import evaluate, jobs
from . import manifest as manifest_mod
from . import storage
from .analysis import Analysis, analyse
from .errors import DataError, TelemetryLabError
from .generate import fleet_specs, generate
from .io import TelemetryFile, file_stem
from .params import AnalysisParams

#: Welch segment lengths offered by the tuning panel, samples.
NPERSEG_CHOICES = (256, 512, 1024, 2048, 4096, 8192, 16384)
#: Buckets of the decimated traces drawn in plots.
PLOT_BUCKETS = 1000
_EVENT_COLOR = "tab:red"
_TRUTH_COLOR = "tab:green"


# -- data to look at ------------------------------------------------------------------------

@dataclass
class Fleet:
    """A manifest and the telemetry files it lists.

    Attributes
    ----------
    manifest : str
        Manifest URI.
    sites : list of str
        URI of each file, in manifest order.
    """

    manifest: str
    sites: list[str]

    @classmethod
    def from_manifest(cls, uri: str) -> "Fleet":
        m = manifest_mod.load(uri)
        return cls(uri, [u for _, u in manifest_mod.entries(m)])

    @property
    def folder(self) -> str:
        """The folder (or prefix) the manifest is in."""
        return self.manifest.rstrip("/").rsplit("/", 1)[0]

    def most_anomalous(self) -> str:
        """The site with the most injected anomalies in its truth sidecar (the first site
        when there are no sidecars)."""
        counts = [len((truth(s) or {}).get("anomalies", [])) for s in self.sites]
        return self.sites[int(np.argmax(counts))]


def demo_fleet(out_dir: str = "", *, sites: int = 2, rows: int = 20_000, seed: int = 7) -> Fleet:
    """Generate a small synthetic fleet (at least one site with injected anomalies).

    Parameters
    ----------
    out_dir : str
        Folder or ``s3://`` prefix to write to. Empty: ``demo/<sites>x<rows>-seed<seed>`` in
        this user's scratch folder (:func:`telemetry_lab.notebook.scratch_base`), rewritten
        by every call. A fixed folder rather than a new temporary one because kernels are
        often killed (nbval does), so nothing would remove it; generation is deterministic
        and every file is replaced atomically, so notebooks open at the same time can share
        it.
    sites, rows : int
        Number of sites and rows per site (1 kHz, so ``rows / 1000`` seconds each).
    seed : int
        Generator seed; the same seed gives the same fleet.
    """
    if not out_dir:
        from .notebook import scratch_base

        out_dir = os.path.join(scratch_base(), "demo", f"{sites}x{rows}-seed{seed}")
    generate(fleet_specs(sites, rows, seed=seed), out_dir, workers=1)
    return Fleet.from_manifest(storage.join(out_dir, "manifest.json"))


def truth(site_uri: str) -> dict | None:
    """The ground-truth sidecar ``<stem>.truth.json`` beside a generated file, or None."""
    uri = evaluate.truth_uri(site_uri)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"truth sidecar is not valid JSON ({exc})", file=uri) from None


def _html_table(header: Sequence[str], rows: Sequence[Sequence], *, caption: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def truth_table(site_uri: str):
    """The anomalies injected into a generated site, as an HTML table."""
    from IPython.display import HTML

    t = truth(site_uri)
    if t is None:
        return HTML(f"<p>No truth sidecar for {escape(site_uri)}.</p>")
    start = t["start_ns"]
    rows = [(a["channel"], a["kind"], (a["start_ns"] - start) / 1e9,
             (a["end_ns"] - a["start_ns"]) / 1e9, a["amplitude_sigma"]) for a in t["anomalies"]]
    return HTML(_html_table(("channel", "kind", "start s", "duration s", "amplitude (sigma)"),
                            rows, caption=f"{t['site_id']}: {len(rows)} injected anomalies"))


def channel_table(analysis: Analysis):
    """Every analysed channel: role, unit, label, statistics and event count (HTML)."""
    from IPython.display import HTML

    doc = analysis.document
    rows = [(n, s["role"], s["unit"], s["label"], s.get("mean"), s.get("std"), s.get("min"),
             s.get("max"), s["event_count"]) for n, s in doc["sensor_stats"].items()]
    health = (doc.get("report") or {}).get("equipment_health")
    return HTML(_html_table(("channel", "role", "unit", "label", "mean", "std", "min", "max",
                             "events"), rows,
                            caption=f"{doc['site_id']} ({doc['rows']} rows, health {health})"))


# -- plots --------------------------------------------------------------------------------

def _figure(width: float, height: float, *, left: float = 0.9, right: float = 0.15,
            top: float = 0.45, bottom: float = 0.5, hspace: float = 0.35):
    """A figure ``width`` x ``height`` inches with fixed margins (inches). Layout engines
    (constrained, tight) draw the figure again to measure it: twice the time of a draw."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height, hspace=hspace)
    return fig


def _seconds(t_ns, start_ns: int) -> np.ndarray:
    return (np.asarray(t_ns, dtype=np.int64) - start_ns) / 1e9


def _spans(ax, spans: Sequence[tuple[float, float]], *, color: str, alpha: float, label: str,
           min_width: float = 0.0) -> None:
    """Vertical bands over the full height of ``ax`` at ``(start, end)`` times, s."""
    if not spans:
        return
    ranges = [(a, max(b - a, min_width)) for a, b in spans]
    ax.broken_barh(ranges, (0, 1), transform=ax.get_xaxis_transform(), color=color,
                   alpha=alpha, label=label, linewidth=0)


def plot_channels(analysis: Analysis, truth_doc: dict | None = None, *, roles=None):
    """One panel per channel role: the min/max envelope of each channel over time, with
    injected anomalies shaded.

    Parameters
    ----------
    analysis : Analysis
        From ``analyse(uri, trace_buckets=...)`` (traces are required).
    truth_doc : dict, optional
        A truth sidecar (:func:`truth`).
    roles : sequence of str, optional
        Roles to draw; default all, in layout order.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not analysis.traces:
        raise DataError("analysis has no traces; analyse with trace_buckets > 0",
                        file=analysis.document["source"])
    doc = analysis.document
    start = doc["window"]["start_ns"]
    by_role: dict[str, list[str]] = {}
    for name, st in doc["sensor_stats"].items():
        by_role.setdefault(st["role"], []).append(name)
    roles = [r for r in (roles or by_role) if r in by_role]
    fig = _figure(10, 1.6 * len(roles))
    axes = fig.subplots(len(roles), 1, sharex=True, squeeze=False)[:, 0]
    anomalies = (truth_doc or {}).get("anomalies", [])
    for ax, role in zip(axes, roles):
        for name in by_role[role]:
            tr = analysis.traces[name]
            t = _seconds(tr.t_ns, start)
            ax.fill_between(t, tr.lo, tr.hi, alpha=0.5, linewidth=0, label=name)
        _spans(ax, [((a["start_ns"] - start) / 1e9, (a["end_ns"] - start) / 1e9)
                    for a in anomalies if a["channel"] in by_role[role]],
               color=_TRUTH_COLOR, alpha=0.25, label="injected", min_width=0.05)
        unit = doc["sensor_stats"][by_role[role][0]]["unit"]
        ax.set_ylabel(f"{role}\n({unit})", fontsize=8)
        ax.legend(fontsize=6, loc="upper right", ncols=4)
    axes[-1].set_xlabel("time since start (s)")
    fig.suptitle(f"{doc['site_id']}: channels by role")
    return fig


def fault_flag_timeline(site_uri: str, *,
                        buckets: int = 400) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Where each named fault bit is set, per time bucket.

    Returns
    -------
    t_s : ndarray
        Start of each bucket, seconds since the first sample.
    active : dict
        Fault name -> bool array (bucket has at least one sample with the bit set).
    """
    with TelemetryFile(site_uri) as tf:
        if not tf.layout.flags_column:
            raise DataError("file has no status flags column", file=site_uri)
        step = max(1, -(-tf.rows // buckets))
        names = tf.layout.fault_bits
        flags = np.zeros(-(-tf.rows // step), dtype=np.uint32)
        t_ns = np.zeros(len(flags), dtype=np.int64)
        for chunk in tf.iter_chunks([]):
            rows = chunk.start + np.arange(len(chunk))
            b = rows // step
            np.bitwise_or.at(flags, b, chunk.flags.astype(np.uint32))
            first = rows % step == 0
            t_ns[b[first]] = chunk.timestamps[first]
    t_s = (t_ns - t_ns[0]) / 1e9
    return t_s, {name: (flags & np.uint32(1 << bit)) != 0 for bit, name in sorted(names.items())}


def plot_fault_flags(site_uri: str, *, buckets: int = 400):
    """One row per named fault bit, dark where the bit is set (Figure)."""
    t_s, active = fault_flag_timeline(site_uri, buckets=buckets)
    width = t_s[1] - t_s[0] if len(t_s) > 1 else 1.0
    fig = _figure(10, 0.3 * len(active) + 1.0, left=1.4)
    ax = fig.subplots()
    for row, (name, on) in enumerate(active.items()):
        ax.broken_barh([(t, width) for t in t_s[on]], (row + 0.1, 0.8), color="tab:red",
                       linewidth=0)
    ax.set_yticks(np.arange(len(active)) + 0.5, list(active), fontsize=8)
    ax.set_ylim(0, len(active))
    ax.set_xlim(0, t_s[-1] + width)
    ax.set_xlabel("time since start (s)")
    ax.set_title(f"{file_stem(site_uri)}: fault flags")
    return fig


def plot_spectra(analysis: Analysis):
    """Welch spectra of the spectral channels, grouped by machine part, with each
    channel's dominant frequency marked (Figure)."""
    doc = analysis.document
    if not analysis.psd:
        raise DataError("analysis has no spectra (no channel of a spectral role)",
                        file=doc["source"])
    groups: dict[str, list[str]] = {}
    for name in analysis.psd:
        groups.setdefault(doc["sensor_stats"][name]["group"] or name, []).append(name)
    fig = _figure(10, 2.2 * len(groups))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (group, names) in zip(axes, groups.items()):
        for name in names:
            freqs, p = analysis.psd[name]
            line, = ax.semilogy(freqs[1:], p[1:], linewidth=0.8, label=name)
            dom = doc["spectral"][name]["dominant_hz"]
            if dom is not None:
                ax.axvline(dom, color=line.get_color(), linestyle=":", linewidth=0.8)
        ax.set_ylabel(f"{group}\nPSD", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("frequency (Hz)")
    fig.suptitle(f"{doc['site_id']}: spectra (dotted: dominant frequency)")
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


# -- tuning detection -----------------------------------------------------------------------

@dataclass
class Score:
    """Events of one channel against its injected anomalies.

    ``precision`` is the share of (listed) events overlapping an anomaly, ``recall`` the
    share of anomalies overlapped by an event; None where the share is undefined (no
    events, no anomalies)."""

    events: int
    true_events: int
    anomalies: int
    detected: int

    @property
    def precision(self) -> float | None:
        return self.true_events / self.events if self.events else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.anomalies if self.anomalies else None


def score_channel(doc: dict, truth_doc: dict, channel: str, *,
                  tolerance_s: float = evaluate.DEFAULT_TOLERANCE_S) -> Score:
    """Score the listed events of ``channel`` in a result document against a truth sidecar
    (matching rules of :func:`telemetry_lab.evaluate.match_events`)."""
    from .generate import BEARING_KINDS

    events = [e for e in doc["events"] if e["channel"] == channel]
    # A bearing defect spans the whole file and is judged by the envelope verdict, not by
    # events: matching events against it would make every event on the channel "true".
    anomalies = [a for a in truth_doc.get("anomalies", [])
                 if a["channel"] == channel and a["kind"] not in BEARING_KINDS]
    m = evaluate.match_events(events, anomalies, tolerance_s=tolerance_s, source=doc["source"])
    return Score(len(events), len(events) - len(m.false_events), len(anomalies),
                 sum(m.detected))


@dataclass
class TuneResult:
    """What the tuning panel shows for one setting."""

    site: str
    channel: str
    params: AnalysisParams
    event_count: int
    score: Score | None
    analysis: Analysis = field(repr=False)


class TuneDetectionPanel:
    """Tune the detector on one channel of one site and save the params for runs.

    Widgets: site, channel, z threshold, window (samples), Welch nperseg; the plot follows
    them: signal envelope, rolling band (mean +/- z std), flagged events, injected
    anomalies where a truth sidecar exists, and the channel's spectrum. The summary line
    gives the event count and, with a truth sidecar, precision and recall. Settings that
    :class:`AnalysisParams` rejects (say a threshold below the detector's exit threshold)
    leave the plot as it was and say why in ``status``. *Save params* writes the whole-site
    :class:`AnalysisParams` (all channels) to the path in the text box, for
    ``telemetry-lab run --params``.

    Parameters
    ----------
    sites : sequence of str
        Telemetry file URIs to choose from.
    params : AnalysisParams, optional
        Starting point (default preset); the widgets override threshold, window, nperseg.
    site : str, optional
        The site shown first (default the first).
    save_path : str, optional
        Default path of *Save params*: ``<folder of the first site>/params/tuned.json``.
    """

    def __init__(self, sites: Sequence[str], *, params: AnalysisParams | None = None,
                 site: str | None = None, save_path: str = ""):
        import ipywidgets as w

        if not sites:
            raise DataError("no sites to tune on")
        self.base = params or AnalysisParams.preset("default")
        self.result: TuneResult | None = None
        self.site = w.Dropdown(options=[(file_stem(s), s) for s in sites],
                               value=site or sites[0], description="site")
        self.channel = w.Dropdown(description="channel")
        self.threshold = w.FloatSlider(value=self.base.z_threshold, min=1.0, max=12.0, step=0.25,
                                       description="z threshold", continuous_update=False)
        # The robust detector's reference must be able to hold min_reference samples; the
        # range takes in the base window, so that loading params never moves it.
        lowest = (min(50, self.base.window) if self.base.detector == "zscore"
                  else self.base.min_reference)
        self.window = w.IntSlider(value=self.base.window, min=lowest,
                                  max=max(5000, self.base.window), step=50,
                                  description="window", continuous_update=False)
        self.nperseg = w.Dropdown(options=NPERSEG_CHOICES,
                                  value=min(NPERSEG_CHOICES,
                                            key=lambda n: abs(n - self.base.welch_nperseg)),
                                  description="nperseg")
        folder = sites[0].rstrip("/").rsplit("/", 1)[0]
        self.save_path = w.Text(value=save_path or storage.join(folder, "params", "tuned.json"),
                                description="params file", layout=w.Layout(width="60%"))
        self.save_button = w.Button(description="Save params", icon="save")
        self.summary = w.HTML()
        self.status = w.HTML()
        self.image = w.Image(format="png")
        self._set_channels()
        self.site.observe(self.on_site_change, names="value")
        for widget in (self.channel, self.threshold, self.window, self.nperseg):
            widget.observe(self.on_change, names="value")
        self.save_button.on_click(lambda _: self.save_params())
        self.widget = w.VBox([
            w.HBox([self.site, self.channel]),
            w.HBox([self.threshold, self.window, self.nperseg]),
            self.summary, self.image, w.HBox([self.save_path, self.save_button]), self.status])
        self.on_change()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def params(self) -> AnalysisParams:
        """The whole-site params the widgets describe (all channels)."""
        return self.base.replace(
            z_threshold=float(self.threshold.value), window=int(self.window.value),
            welch_nperseg=int(self.nperseg.value),
            chunk_rows=max(self.base.chunk_rows, 2 * int(self.window.value)))

    def _set_channels(self) -> None:
        with TelemetryFile(self.site.value) as tf:
            names = tf.layout.channel_names
        keep = self.channel.value if self.channel.value in names else None
        anomalous = [a["channel"] for a in (truth(self.site.value) or {}).get("anomalies", [])]
        self.channel.options = names
        self.channel.value = keep or (anomalous[0] if anomalous else names[0])

    def on_site_change(self, change=None) -> TuneResult | None:
        """New site: offer its channels (keeping the current one if it has it), replot."""
        self.channel.unobserve(self.on_change, names="value")
        try:
            self._set_channels()
        except TelemetryLabError as exc:
            self.status.value = f"<b>error:</b> {escape(str(exc))}"
            return None
        finally:
            self.channel.observe(self.on_change, names="value")
        return self.on_change()

    def on_change(self, change=None) -> TuneResult | None:
        """Analyse the chosen channel with the widgets' settings and redraw.

        Returns the new :class:`TuneResult` (also kept in ``self.result``), or None when
        the settings or the file are invalid (the reason is in ``status``).
        """
        site, channel = self.site.value, self.channel.value
        try:
            params = self.params
            with TelemetryFile(site) as tf:
                role = tf.layout.channel(channel).role
            analysis = analyse(site, params.replace(channels=(channel,), spectral_roles=(role,)),
                               trace_buckets=PLOT_BUCKETS)
            truth_doc = truth(site)
        except TelemetryLabError as exc:
            self.status.value = f"<b>error:</b> {escape(str(exc))}"
            return None
        doc = analysis.document
        score = score_channel(doc, truth_doc, channel) if truth_doc else None
        self.result = TuneResult(site, channel, params, doc["sensor_stats"][channel]["event_count"],
                                 score, analysis)
        self.summary.value = escape(self._summary_line())
        self.image.value = _png(self._plot(truth_doc))
        self.status.value = ""
        return self.result

    def _summary_line(self) -> str:
        r = self.result
        line = f"{file_stem(r.site)} {r.channel}: {r.event_count} events"
        if r.score is None:
            return line + " (no truth sidecar: precision and recall unknown)"
        return (line + f"; {r.score.anomalies} injected anomalies; precision "
                f"{_cell(r.score.precision)}, recall {_cell(r.score.recall)}")

    def _plot(self, truth_doc: dict | None):
        r = self.result
        doc, ch = r.analysis.document, r.channel
        start = doc["window"]["start_ns"]
        tr = r.analysis.traces[ch]
        t = _seconds(tr.t_ns, start)
        mean, std = np.asarray(tr.mean), np.asarray(tr.std)
        z = r.params.z_threshold
        fig = _figure(10, 5.5, hspace=0.45)
        ax, ax_psd = fig.subplots(2, 1, height_ratios=(3, 2))
        ax.fill_between(t, tr.lo, tr.hi, color="tab:blue", alpha=0.6, linewidth=0, label="signal")
        ax.fill_between(t, mean - z * std, mean + z * std, color="tab:orange", alpha=0.25,
                        linewidth=0, label=f"mean +/- {z:g} std")
        ax.plot(t, mean, color="tab:orange", linewidth=0.8)
        # The band is wild where the zero-padded window meets the file's ends; keep the
        # signal in view rather than those edges.
        lo, hi = np.nanmin(tr.lo), np.nanmax(tr.hi)
        pad = 0.1 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        _spans(ax, [((e["start_ns"] - start) / 1e9, (e["end_ns"] - start) / 1e9)
                    for e in doc["events"] if e["channel"] == ch],
               color=_EVENT_COLOR, alpha=0.5, label="events", min_width=0.02)
        if truth_doc:
            _spans(ax, [((a["start_ns"] - start) / 1e9, (a["end_ns"] - start) / 1e9)
                        for a in truth_doc["anomalies"] if a["channel"] == ch],
                   color=_TRUTH_COLOR, alpha=0.25, label="injected", min_width=0.05)
        st = doc["sensor_stats"][ch]
        ax.set_ylabel(f"{ch} ({st['unit']})")
        ax.set_xlabel("time since start (s)")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(self._summary_line(), fontsize=9)
        if ch in r.analysis.psd:
            freqs, p = r.analysis.psd[ch]
            ax_psd.semilogy(freqs[1:], p[1:], linewidth=0.8)
            dom = doc["spectral"][ch]["dominant_hz"]
            if dom is not None:
                ax_psd.axvline(dom, color="tab:red", linestyle=":", label=f"dominant {dom:.1f} Hz")
                ax_psd.legend(fontsize=7)
        ax_psd.set_xlabel("frequency (Hz)")
        ax_psd.set_ylabel(f"PSD (nperseg {r.params.welch_nperseg})")
        return fig

    def save_params(self, path: str | None = None) -> str | None:
        """Write :attr:`params` to ``path`` (default: the text box) as a params file.

        Returns the URI written, or None if writing failed (reason in ``status``).
        """
        uri = path or self.save_path.value
        try:
            params = self.params
            params.save(uri)
        except TelemetryLabError as exc:
            self.status.value = f"<b>error:</b> {escape(str(exc))}"
            return None
        self.status.value = (f"saved to {escape(uri)}: run with <code>--params "
                             f"{escape(uri)}</code> (params digest {params.digest()})")
        return uri


# -- submitting runs ------------------------------------------------------------------------

class LocalSubmission:
    """A run of the whole array job on this machine: ``telemetry-lab run`` as a child."""

    def __init__(self, cfg: jobs.LocalRun):
        cmd = [sys.executable, "-m", "telemetry_lab", "run", "--manifest", cfg.manifest,
               "--results", cfg.results, "--files-per-job", str(cfg.files_per_job),
               "--workers", str(cfg.workers), "--run-id", cfg.run_id, "--engine", cfg.engine,
               "--quiet"]
        if cfg.params_uri:
            cmd += ["--params", cfg.params_uri]
        # Output goes to a file, not a pipe: nobody may be reading while the run goes on.
        self._log = tempfile.TemporaryFile(mode="w+")
        # The log is read for as long as the panel shows this run: closed with the object.
        weakref.finalize(self, self._log.close)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        """What the run printed so far."""
        self._log.seek(0)
        return self._log.read()


#: Backends the submit panel offers: name -> callable taking a :class:`jobs.LocalRun` and
#: returning a submission with ``poll()``, ``wait()`` and ``output()``.
def _batch_submission(cfg: jobs.LocalRun):
    from .aws import BatchSubmission  # boto3 only when Batch is picked

    return BatchSubmission(cfg)


#: Where the submit panel can send a run: this machine, or AWS Batch (queue and job
#: definition from $TELEMETRY_LAB_JOB_QUEUE / $TELEMETRY_LAB_JOB_DEFINITION).
BACKENDS: dict[str, Callable[[jobs.LocalRun], object]] = {"local": LocalSubmission,
                                                          "batch": _batch_submission}


def _list(folder: str) -> list:
    import pyarrow as pa
    import pyarrow.fs as pafs

    fs, path = storage.resolve(folder)
    try:
        return fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=False,
                                                  allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot list: {exc}", file=folder) from None


def _json_files(folder: str) -> list[str]:
    """URIs of the ``*.json`` directly in ``folder`` (not ``_``- or ``.``-prefixed), sorted."""
    import pyarrow.fs as pafs

    return sorted(storage.join(folder, i.base_name) for i in _list(folder)
                  if i.type == pafs.FileType.File and i.base_name.endswith(".json")
                  and i.base_name[:1] not in "._")


@dataclass
class RunProgress:
    """How far a run is, from what it has written so far."""

    run_id: str
    total: int
    ok: int
    failed: int
    finished: bool
    exit_code: int | None

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def line(self) -> str:
        state = (f"finished, exit code {self.exit_code}" if self.finished else "running")
        return (f"run {self.run_id}: {self.done}/{self.total} files done ({self.ok} OK, "
                f"{self.failed} FAIL); {state}")


def run_progress(results_root: str, run_id: str, total: int) -> RunProgress:
    """Progress of a run from storage: result documents, error records and the run
    summary ``_run.json`` (finished) under ``results/{run_id}/``."""
    paths = jobs.Paths(results_root, run_id)
    folder = storage.join(results_root, "results", run_id)
    ok = len(_json_files(folder))
    failed = len(_json_files(storage.join(folder, "errors")))
    exit_code = None
    if storage.exists(paths.run_summary):
        exit_code = _read_json(paths.run_summary).get("exit_code")
    return RunProgress(run_id, total, ok, failed, exit_code is not None, exit_code)


class SubmitPanel:
    """Submit the array job over a manifest and watch it.

    Widgets: manifest, params file (empty: default preset), files per job, workers,
    backend, *Submit*, a progress bar and a status line. Progress is read from the run's
    objects in storage, so it works for any backend.

    Parameters
    ----------
    manifest, results : str
        Initial manifest URI and results root.
    params : str
        Initial params file.
    files_per_job, workers : int
        Initial array partitioning and parallel children (local backend).
    poll_s : float
        Interval of the progress watcher after a submit without ``wait``, s.
    """

    def __init__(self, manifest: str = "", results: str = "output", *, params: str = "",
                 files_per_job: int = 4, workers: int = 2, poll_s: float = 1.0):
        import ipywidgets as w

        wide = w.Layout(width="70%")
        self.manifest = w.Text(value=manifest, description="manifest", layout=wide)
        self.results = w.Text(value=results, description="results", layout=wide)
        self.params = w.Text(value=params, description="params file", layout=wide,
                             placeholder="empty: default preset")
        self.files_per_job = w.BoundedIntText(value=files_per_job, min=1, max=100_000,
                                              description="files/job")
        self.workers = w.BoundedIntText(value=workers, min=1, max=256, description="workers")
        self.backend = w.Dropdown(options=list(BACKENDS), value="local", description="backend")
        self.button = w.Button(description="Submit", button_style="primary", icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress")
        self.status = w.HTML()
        self.button.on_click(lambda _: self.submit())
        self.widget = w.VBox([self.manifest, self.results, self.params,
                              w.HBox([self.files_per_job, self.workers, self.backend]),
                              w.HBox([self.button, self.progress]), self.status])
        self.poll_s = poll_s
        self.run_id: str | None = None
        self.total = 0
        self.submission = None
        self._watcher: threading.Thread | None = None

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def submit(self, *, wait: bool = False) -> str | None:
        """Check the inputs, start a run with the chosen backend and follow it.

        Parameters
        ----------
        wait : bool
            Block until the run ends; otherwise a thread refreshes the progress every
            ``poll_s`` seconds until it does.

        Returns
        -------
        str or None
            The run id, or None when the inputs are invalid (reason in ``status``).
        """
        try:
            m = manifest_mod.load(self.manifest.value)
            if self.params.value:
                AnalysisParams.load(self.params.value)
            if self._watcher is not None and self._watcher.is_alive():
                raise TelemetryLabError(f"run {self.run_id} is still going; wait for it")
        except TelemetryLabError as exc:
            self.status.value = f"<b>not submitted:</b> {escape(str(exc))}"
            return None
        cfg = jobs.LocalRun(manifest=self.manifest.value, results=self.results.value,
                            run_id=jobs.new_run_id(), files_per_job=int(self.files_per_job.value),
                            workers=int(self.workers.value), params_uri=self.params.value or None)
        self.run_id, self.total = cfg.run_id, m["total_files"]
        self.progress.max, self.progress.value = max(1, self.total), 0
        self.submission = BACKENDS[self.backend.value](cfg)
        self.status.value = f"submitted run {escape(cfg.run_id)} ({self.backend.value})"
        if wait:
            self.submission.wait()
            self.refresh_progress()
        else:
            self._watcher = threading.Thread(target=self._watch, name=f"watch-{cfg.run_id}",
                                             daemon=True)
            self._watcher.start()
        return cfg.run_id

    def refresh_progress(self) -> RunProgress | None:
        """Read the run's progress from storage and update the bar and status line.

        A run whose process ended without writing its summary counts as finished with the
        process's exit code, and its output is shown.
        """
        if self.run_id is None:
            return None
        p = run_progress(self.results.value, self.run_id, self.total)
        code = self.submission.poll()
        if code is not None and not p.finished:
            p.finished, p.exit_code = True, code
        self.progress.value = min(p.done, self.progress.max)
        self.progress.bar_style = ("" if not p.finished else
                                   "success" if p.exit_code == 0 else "danger")
        text = escape(p.line())
        if p.finished and p.exit_code != 0:
            text += f"<pre>{escape(self.submission.output()[-2000:])}</pre>"
        self.status.value = text
        return p

    def _watch(self) -> None:
        while True:
            try:
                p = self.refresh_progress()
            except TelemetryLabError as exc:
                self.status.value = f"<b>cannot read progress:</b> {escape(str(exc))}"
                return
            if p is None or p.finished:
                return
            time.sleep(self.poll_s)


def demo_runs(manifest: str, results: str, *,
              z_thresholds: Sequence[float] = (4.0, 3.0)) -> list[str]:
    """Runs to compare, made in this process: the whole manifest once per z threshold (the
    default preset otherwise), as run ``demo-z<threshold>`` under ``results``. Each run's
    params file is written to ``<results>/params/z<threshold>.json``.

    A submitted run would do the same work in child processes; in a notebook demo their
    start-up (a few seconds each) would dominate a small fleet's analysis.

    Returns
    -------
    list of str
        The run ids, in threshold order.
    """
    entries = manifest_mod.entries(manifest_mod.load(manifest))
    run_ids = []
    for z in z_thresholds:
        params = AnalysisParams.preset("default").replace(z_threshold=float(z))
        params.save(storage.join(results, "params", f"z{z:g}.json"))
        run_id = f"demo-z{z:g}"
        summary = jobs.run_slice(entries, jobs.Paths(results, run_id), params,
                                 log=lambda line: None)
        if summary.exit_code:
            failed = [f.stem for f in summary.files if f.status != "OK"]
            raise DataError(f"demo run {run_id} failed for {failed}", file=manifest)
        run_ids.append(run_id)
    return run_ids


# -- comparing runs -------------------------------------------------------------------------

def _json_stem(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")


def _read_json(uri: str) -> dict:
    try:
        doc = json.loads(storage.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", file=uri) from None
    if not isinstance(doc, dict):
        raise DataError(f"expected a JSON object, got {type(doc).__name__}", file=uri)
    return doc


def list_runs(results_root: str) -> list[str]:
    """Run ids with a folder under ``results/`` (``latest`` excluded), sorted by name."""
    import pyarrow.fs as pafs

    return sorted(i.base_name for i in _list(storage.join(results_root, "results"))
                  if i.type == pafs.FileType.Directory and i.base_name != "latest")


@dataclass
class RunResults:
    """What one run produced: per site its event count, health and params; its errors."""

    run_id: str
    sites: dict[str, dict]
    errors: dict[str, str]

    @classmethod
    def load(cls, results_root: str, run_id: str) -> "RunResults":
        jobs.check_run_id(run_id)
        folder = storage.join(results_root, "results", run_id)
        sites = {}
        for uri in _json_files(folder):
            doc = _read_json(uri)
            try:
                sites[_json_stem(uri)] = {
                    "events": sum(s["event_count"] for s in doc["sensor_stats"].values()),
                    "health": (doc.get("report") or {}).get("equipment_health"),
                    "params": doc["params"]}
            except (KeyError, TypeError, AttributeError) as exc:
                raise DataError(f"not a result document (no {exc})", file=uri) from None
        errors = {_json_stem(uri): _read_json(uri).get("message", "?")
                  for uri in _json_files(storage.join(folder, "errors"))}
        if not sites and not errors:
            raise DataError(f"run {run_id!r} has no results", file=folder)
        return cls(run_id, sites, errors)

    @property
    def params(self) -> dict:
        """The params of the run's documents; a field on which they differ (a retry with
        other params) reads ``"(mixed)"``."""
        docs = [s["params"] for s in self.sites.values()]
        if not docs:
            return {}
        return {k: (docs[0][k] if all(d.get(k) == docs[0][k] for d in docs) else "(mixed)")
                for k in docs[0]}


class RunComparison:
    """Two runs side by side: events and health per site, and what params changed.

    Parameters
    ----------
    results_root : str
        Results root both runs wrote to.
    run_a, run_b : str, optional
        Runs to compare; default the last two of :func:`list_runs`.
    """

    def __init__(self, results_root: str, run_a: str | None = None, run_b: str | None = None):
        import ipywidgets as w

        self.results_root = results_root
        runs = list_runs(results_root)
        if not (run_a and run_b) and len(runs) < 2:
            raise DataError(f"need two runs to compare, found {runs}",
                            file=storage.join(results_root, "results"))
        run_a = run_a or runs[-2]
        run_b = run_b or runs[-1]
        options = sorted(set(runs) | {run_a, run_b})
        self.run_a = w.Dropdown(options=options, value=run_a, description="run A")
        self.run_b = w.Dropdown(options=options, value=run_b, description="run B")
        self.table_html = w.HTML()
        self.params_html = w.HTML()
        self.status = w.HTML()
        self.a: RunResults | None = None
        self.b: RunResults | None = None
        for d in (self.run_a, self.run_b):
            d.observe(self.on_change, names="value")
        self.widget = w.VBox([w.HBox([self.run_a, self.run_b]), self.status, self.params_html,
                              self.table_html])
        self.on_change()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def on_change(self, change=None) -> bool:
        """Load the chosen runs and redraw; False (reason in ``status``) if one cannot be
        read."""
        try:
            self.a = RunResults.load(self.results_root, self.run_a.value)
            self.b = RunResults.load(self.results_root, self.run_b.value)
        except TelemetryLabError as exc:
            self.status.value = f"<b>error:</b> {escape(str(exc))}"
            return False
        rows = self.table()
        changed = sum(1 for r in rows if r["health_changed"])
        self.status.value = escape(
            f"{len(rows)} sites; events {sum(r['events_a'] or 0 for r in rows)} -> "
            f"{sum(r['events_b'] or 0 for r in rows)}; health changed at {changed}")
        diff = self.params_diff()
        self.params_html.value = (
            _html_table(("param", self.a.run_id, self.b.run_id),
                        [(k, json.dumps(a), json.dumps(b)) for k, (a, b) in diff.items()],
                        caption="params that differ") if diff else "<p>Same params.</p>")
        self.table_html.value = _html_table(
            ("site", f"events {self.a.run_id}", f"events {self.b.run_id}", "change",
             f"health {self.a.run_id}", f"health {self.b.run_id}", ""),
            [(r["site"], r["events_a"], r["events_b"], r["events_delta"], r["health_a"],
              r["health_b"], "health changed" if r["health_changed"] else "") for r in rows])
        return True

    @staticmethod
    def _side(run: RunResults, stem: str) -> tuple[int | None, str | None]:
        if stem in run.sites:
            return run.sites[stem]["events"], run.sites[stem]["health"]
        if stem in run.errors:
            return None, "FAIL"
        return None, None

    def table(self) -> list[dict]:
        """One row per site in either run: ``site, events_a, events_b, events_delta,
        health_a, health_b, health_changed``. A site that failed reads health ``FAIL``; one
        missing from a run reads None."""
        stems = sorted(set(self.a.sites) | set(self.a.errors) | set(self.b.sites)
                       | set(self.b.errors))
        rows = []
        for stem in stems:
            ea, ha = self._side(self.a, stem)
            eb, hb = self._side(self.b, stem)
            rows.append({"site": stem, "events_a": ea, "events_b": eb,
                         "events_delta": None if ea is None or eb is None else eb - ea,
                         "health_a": ha, "health_b": hb, "health_changed": ha != hb})
        return rows

    def health_changes(self) -> list[dict]:
        """The rows of :meth:`table` whose health differs between the runs."""
        return [r for r in self.table() if r["health_changed"]]

    def params_diff(self) -> dict[str, tuple]:
        """``name -> (value in A, value in B)`` for every params field that differs."""
        pa_, pb = self.a.params, self.b.params
        return {k: (pa_.get(k), pb.get(k)) for k in sorted(set(pa_) | set(pb))
                if pa_.get(k) != pb.get(k)}
