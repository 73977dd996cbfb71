"""Rendered site reports and the fleet index (telemetry_lab.render)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA, fleet_channels, write_telemetry
from telemetry_lab import jobs, manifest as manifest_mod, render
from telemetry_lab.analysis import analyse
from telemetry_lab.bearing import lookup_bearing
from telemetry_lab.importers import import_mat
from telemetry_lab.errors import DataError, ReportError, StorageError
from telemetry_lab.layout import Channel, default_layout
from telemetry_lab.params import AnalysisParams

RUN = "r1"
SECTION_IDS = {"summary", "findings", "actions", "events", "timelines", "spectra", "bearing",
               "faults", "sensor-stats", "run-info"}


class Page(HTMLParser):
    """Elements of a page as ``(tag, attrs, text inside)``; attribute values unescaped.

    ``unbalanced`` lists end tags that do not close the innermost open element, and
    elements never closed: the pages close every element explicitly, so any is a bug.
    """

    VOID = {"meta", "br", "input", "link", "img", "hr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.text_parts: list[str] = []
        self.unbalanced: list[str] = []
        self.feed(text)
        self.close()
        self.unbalanced += [f"<{el['tag']}> never closed" for el in self._open]

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": [], "children": []}
        if self._open:
            self._open[-1]["children"].append(el)
        self.elements.append(el)
        if tag not in self.VOID:
            self._open.append(el)

    def handle_startendtag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": [], "children": []}
        if self._open:
            self._open[-1]["children"].append(el)
        self.elements.append(el)

    def handle_endtag(self, tag):
        if not self._open or self._open[-1]["tag"] != tag:
            self.unbalanced.append(f"</{tag}> inside <{self._open[-1]['tag'] if self._open else ''}>")
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        self.text_parts.append(data)
        for el in self._open:
            el["text"].append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def find(self, tag=None, **attrs) -> list[dict]:
        out = []
        for el in self.elements:
            if tag and el["tag"] != tag:
                continue
            if all(_attr_has(el, k.rstrip("_"), v) for k, v in attrs.items()):
                out.append(el)
        return out


def _attr_has(el, name, value) -> bool:
    got = el["attrs"].get(name.replace("_", "-"))
    if name == "class":
        return got is not None and value in got.split()
    return got == value


def descendants(el, tag=None, cls=None):
    for child in el["children"]:
        if (tag is None or child["tag"] == tag) and (
                cls is None or cls in (child["attrs"].get("class") or "").split()):
            yield child
        yield from descendants(child, tag, cls)


def external_refs(text: str) -> list[str]:
    """Every reference a browser would fetch from the network."""
    page = Page(text)
    refs = []
    for el in page.elements:
        for name in ("src", "href", "xlink:href", "data", "poster", "action"):
            value = (el["attrs"].get(name) or "").strip().lower()
            if value.startswith(("http:", "https:", "//", "ftp:")):
                refs.append(f"<{el['tag']} {name}={value}>")
        if el["tag"] == "link":
            refs.append(f"<link {el['attrs']}>")
    refs += re.findall(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", text)
    refs += re.findall(r"@import\s+(?:url\(|[\"'])[^;]*;", text)
    return refs


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(small_fleet, tmp_path_factory) -> dict:
    """The small fleet run as one slice with the report hook, plus the index."""
    root = tmp_path_factory.mktemp("results")
    entries = manifest_mod.entries(manifest_mod.load(small_fleet["manifest"]))
    paths = jobs.Paths(str(root), RUN)
    summary = jobs.run_slice(entries, paths, AnalysisParams(), log=lambda line: None,
                             on_result=render.site_report_hook(paths))
    assert summary.count("OK") == len(entries), [f.line() for f in summary.files]
    render.write_index(str(root))
    stems = [stem for stem, _ in entries]
    docs = {s: json.loads((root / "results" / RUN / f"{s}.json").read_text()) for s in stems}
    pages = {s: (root / "reports" / RUN / f"{s}.html").read_text() for s in stems}
    return {"root": root, "stems": stems, "docs": docs, "pages": pages}


def test_reports_written_to_run_and_latest(rendered):
    root = rendered["root"]
    for stem in rendered["stems"]:
        run_copy = root / "reports" / RUN / f"{stem}.html"
        latest = root / "reports" / "latest" / f"{stem}.html"
        assert run_copy.read_bytes() == latest.read_bytes()
        assert run_copy.read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in (root / "reports").rglob("*") if p.name.startswith(".")], \
        "temporary files of the atomic writes were left behind"
    # Templates live in the repo; nothing rendered may land there.
    assert not list((REPO / "reports").rglob("*.html"))


def test_sections_and_health_badge(rendered):
    for stem in rendered["stems"]:
        doc, page = rendered["docs"][stem], Page(rendered["pages"][stem])
        ids = {el["attrs"].get("id") for el in page.elements}
        assert SECTION_IDS <= ids, SECTION_IDS - ids
        badge = page.find(id="health")[0]
        health = doc["report"]["equipment_health"]
        assert "".join(badge["text"]) == health
        assert f"health-{health}" in badge["attrs"]["class"].split()
        assert "".join(page.find(id="site-id")[0]["text"]) == doc["site_id"]
        findings = ["".join(li["text"]) for ul in page.find("ul", class_="findings")
                    for li in descendants(ul, "li")]
        assert findings == doc["report"]["key_findings"]
        actions = ["".join(li["text"]) for ul in page.find("ul", class_="actions")
                   for li in descendants(ul, "li")]
        assert actions == doc["report"]["recommended_actions"]


def test_code_hidden_self_contained_and_well_formed(rendered):
    for stem in rendered["stems"]:
        text = rendered["pages"][stem]
        page = Page(text)
        assert page.unbalanced == []
        assert external_refs(text) == []
        assert not page.find("script"), "site reports need no script at all"
        assert "jp-InputArea" not in text and "build_notebook" not in text  # no code cells
        assert "<style" in text  # the stylesheet is inlined


def test_events_table_lists_every_event(rendered):
    doc = rendered["docs"]["site-0001"]
    assert doc["events"], "the fixture's site-0001 has injected anomalies"
    for stem in rendered["stems"]:
        doc, page = rendered["docs"][stem], Page(rendered["pages"][stem])
        table = page.find("table", id="events-table")[0]
        rows = [[("".join(td["text"])) for td in descendants(tr, "td")]
                for tbody in descendants(table, "tbody") for tr in descendants(tbody, "tr")]
        assert len(rows) == len(doc["events"])
        assert [r[1] for r in rows] == [e["channel"] for e in doc["events"]]
        assert [int(r[5]) for r in rows] == [e["samples"] for e in doc["events"]]


def test_timelines_of_flagged_channels(rendered):
    doc, page = rendered["docs"]["site-0001"], Page(rendered["pages"]["site-0001"])
    figures = page.find("figure", class_="timeline")
    flagged = render.flagged_channels(doc)
    assert [f["attrs"]["data-channel"] for f in figures] == [c["name"] for c in flagged]
    # The overheated bearing is over its rule limit, so it leads.
    assert flagged[0]["name"] == "sensor_09" and flagged[0]["level"] == "critical"
    for fig, ch in zip(figures, flagged):
        svg = next(descendants(fig, "svg"))
        listed = [e for e in doc["events"] if e["channel"] == ch["name"]]
        assert int(svg["attrs"]["data-events"]) == len(listed)
        for cls in ("band", "signal"):
            assert list(descendants(svg, "polygon", cls)), (ch["name"], cls)
        assert list(descendants(svg, "polyline", "mean"))
        assert bool(list(descendants(svg, "path", "event-mark"))) == bool(listed)
        assert bool(list(descendants(svg, "rect", "event"))) == bool(listed)
        # Every event's start lies in a drawn span, at its time on the x axis.
        x0, x1 = (float(v) for v in svg["attrs"]["data-x-range"].split())
        frame = next(descendants(svg, "rect", "frame"))["attrs"]
        left, width = float(frame["x"]), float(frame["width"])
        spans = [(float(r["attrs"]["x"]), float(r["attrs"]["x"]) + float(r["attrs"]["width"]))
                 for r in descendants(svg, "rect", "event")]
        for e in listed:
            px = left + ((e["start_ns"] - doc["window"]["start_ns"]) / 1e9 - x0) / (x1 - x0) * width
            assert any(a - 0.06 <= px <= b + 0.06 for a, b in spans), (ch["name"], e)


def test_timeline_band_is_mean_plus_minus_threshold(small_fleet):
    analysis = analyse(str(small_fleet["dir"] / "site-0002.parquet"), trace_buckets=200)
    trace = analysis.traces["sensor_12"]
    z = analysis.document["params"]["z_threshold"]
    win = analysis.document["window"]
    svg = Page(render.timeline_svg(trace, [], start_ns=win["start_ns"], end_ns=win["end_ns"],
                                   z=z, width=600))
    band = svg.find("polygon", class_="band")[0]["attrs"]["points"].split()
    mean = svg.find("polyline", class_="mean")[0]["attrs"]["points"].split()
    # 200 buckets fit in 600 px: drawn one to one, but for the first ones, before the
    # detector has a reference (no band there).
    mu, sd = np.asarray(trace.mean), np.asarray(trace.std)
    drawn = np.isfinite(mu) & np.isfinite(sd)
    assert 0 < (~drawn).sum() < 5 and drawn[(~drawn).sum():].all()
    mu, sd = mu[drawn], sd[drawn]
    assert len(mean) == len(mu)
    ys = lambda pts: np.array([float(p.split(",")[1]) for p in pts])
    upper, lower, m = ys(band[:len(mean)]), ys(band[len(mean):])[::-1], ys(mean)
    # The band's edges are the centre line +/- z * scale of the trace, mapped to pixels by
    # the plot's value range onto its frame, wherever they are not clipped to the frame.
    frame = svg.find("rect", class_="frame")[0]["attrs"]
    top, bottom = float(frame["y"]), float(frame["y"]) + float(frame["height"])
    y0, y1 = (float(v) for v in svg.find("svg")[0]["attrs"]["data-y-range"].split())
    to_px = lambda v: bottom - (v - y0) / (y1 - y0) * (bottom - top)
    np.testing.assert_allclose(np.clip(to_px(mu), top, bottom), m, atol=0.051)
    for px, values in ((upper, mu + z * sd), (lower, mu - z * sd)):
        free = (px > top + 0.1) & (px < bottom - 0.1)
        assert free.sum() > 150
        np.testing.assert_allclose(px[free], to_px(values[free]), atol=0.051)
    # The signal envelope is always entirely in view.
    sig = ys(svg.find("polygon", class_="signal")[0]["attrs"]["points"].split())
    assert sig.min() >= top and sig.max() <= bottom


def test_psd_marks_the_dominant_frequency(rendered):
    doc, page = rendered["docs"]["site-0000"], Page(rendered["pages"]["site-0000"])
    figures = page.find("figure", class_="psd")
    assert [f["attrs"]["data-channel"] for f in figures] == list(doc["spectral"])
    assert len(figures) == 9  # the fleet's vibration channels
    for fig in figures:
        info = doc["spectral"][fig["attrs"]["data-channel"]]
        line = next(descendants(fig, "line", "dominant"))
        assert float(line["attrs"]["data-hz"]) == info["dominant_hz"]
        # The marker stands where the drawn spectrum peaks (lowest y in SVG).
        d = next(descendants(fig, "path", "psd"))["attrs"]["d"]
        pts = np.array([[float(v) for v in p.split(",")] for p in d.replace("M", "").replace("L", "").split()])
        assert abs(pts[np.argmin(pts[:, 1]), 0] - float(line["attrs"]["x1"])) < 0.11
        label = "".join(next(descendants(fig, "span", "dominant-hz"))["text"])
        assert label.startswith(f"{info['dominant_hz']:.2f} Hz")


def test_fault_and_statistics_tables(rendered):
    doc, page = rendered["docs"]["site-0001"], Page(rendered["pages"]["site-0001"])
    faults = page.find("table", id="faults-table")[0]
    rows = {"".join(next(descendants(tr, "td"))["text"]): ["".join(td["text"]) for td in descendants(tr, "td")]
            for tr in descendants(faults, "tr") if list(descendants(tr, "td"))}
    assert set(rows) == set(doc["faults"])
    for name, info in doc["faults"].items():
        assert int(rows[name][2]) == info["samples"]
    assert doc["faults"]["bearing_overtemp"]["samples"] > 0
    stats = page.find("table", id="stats-table")[0]
    names = ["".join(next(descendants(tr, "td"))["text"]) for tr in descendants(stats, "tr")
             if list(descendants(tr, "td"))]
    assert names == list(doc["sensor_stats"])
    params = page.find("table", id="params-table")[0]
    keys = ["".join(th["text"]) for th in descendants(params, "th")]
    assert keys == list(doc["params"])
    timings = ["".join(th["text"]) for th in descendants(page.find("table", id="timings-table")[0], "th")]
    assert timings == list(doc["timings"])


# -- bearing diagnostics -------------------------------------------------------------------

def _cells(table) -> list[list[str]]:
    return [["".join(td["text"]) for td in descendants(tr, "td")]
            for tbody in descendants(table, "tbody") for tr in descendants(tbody, "tr")]


def _x_px(svg, hz: float) -> float:
    """Where frequency ``hz`` lies on an SVG plot, from its data range and frame."""
    x0, x1 = (float(v) for v in svg["attrs"]["data-x-range"].split())
    frame = next(descendants(svg, "rect", "frame"))["attrs"]
    return float(frame["x"]) + (hz - x0) / (x1 - x0) * float(frame["width"])


@pytest.mark.skipif(not (SHARED_DATA / "cwru" / "105.mat").exists(),
                    reason="../shared/data/cwru is not present")
def test_bearing_section_marks_the_defect_lines_of_a_cwru_record(tmp_path):
    out = tmp_path / "cwru-105.parquet"
    import_mat(str(SHARED_DATA / "cwru" / "105.mat"), str(out), site_id="cwru-105", fs=12000,
               bearing=lookup_bearing("SKF 6205-2RS JEM"))
    analysis = analyse(str(out), trace_buckets=2000)
    doc, text = analysis.document, render.render_site_report(analysis)
    page = Page(text)
    assert page.unbalanced == [] and external_refs(text) == []
    section = page.find("section", id="bearing")[0]
    assert "".join(next(descendants(section, "h2"))["text"]) == "Bearing diagnostics"
    verdict = page.find(id="bearing-verdict")[0]
    assert doc["bearing"]["verdict"]["defect"] == verdict["attrs"]["data-defect"] == "inner_race"
    assert "inner race defect" in "".join(verdict["text"])
    assert doc["bearing"]["verdict"]["channel"] == "drive_end" and "drive_end" in "".join(verdict["text"])
    rows = _cells(page.find("table", id="bearing-table")[0])
    assert [r[0] for r in rows] == list(doc["bearing"]["channels"]) == ["drive_end", "fan_end", "base"]
    for r in rows:
        ch = doc["bearing"]["channels"][r[0]]
        assert r[8] == f"{ch['kurtosis']:.2f}" and r[9] == ch["verdict"]["defect"].replace("_", " ")
    figures = page.find("figure", class_="envelope")
    assert [f["attrs"]["data-channel"] for f in figures] == list(analysis.envelope)
    for fig in figures:
        name = fig["attrs"]["data-channel"]
        svg = next(descendants(fig, "svg"))
        lines = list(descendants(svg, "line", "marker"))
        markers = analysis.envelope[name].markers
        assert [(ln["attrs"]["data-label"], float(ln["attrs"]["data-hz"])) for ln in lines] == \
            [(m["label"], m["hz"]) for m in sorted(markers, key=lambda m: m["hz"])]
        labels = {"".join(t["text"]) for t in descendants(svg, "text", "marker-label")}
        assert {m["label"] for m in markers} == labels and "BPFI" in labels
        for ln in lines:
            assert abs(float(ln["attrs"]["x1"]) - _x_px(svg, float(ln["attrs"]["data-hz"]))) < 0.06
            # The channel's verdict is highlighted, and only it.
            assert ("verdict" in ln["attrs"]["class"].split()) == \
                (ln["attrs"]["data-defect"] == doc["bearing"]["channels"][name]["verdict"]["defect"])
    fig = figures[0]
    svg = next(descendants(fig, "svg"))
    bpfi = next(ln for ln in descendants(svg, "line", "marker") if ln["attrs"]["data-label"] == "BPFI")
    assert "verdict" in bpfi["attrs"]["class"].split()
    assert float(bpfi["attrs"]["data-hz"]) == pytest.approx(5.4152 * 1797 / 60, rel=0.02)
    # On the drive end the strongest drawn line is the BPFI line (the highest point of the
    # path is its lowest y), so the spectrum and its markers share one frequency axis.
    d = next(descendants(svg, "path", "envelope"))["attrs"]["d"]
    pts = np.array([[float(v) for v in p.split(",")] for p in d.replace("M", "").replace("L", "").split()])
    assert abs(pts[np.argmin(pts[:, 1]), 0] - float(bpfi["attrs"]["x1"])) < 1.5


def test_site_without_bearing_info_has_indicators_but_no_envelope_plot(tmp_path):
    uri = write_telemetry(tmp_path / "plain.parquet", fleet_channels(20_000, seed=2),
                          layout=default_layout(1000.0))
    analysis = analyse(uri, trace_buckets=2000)
    doc = analysis.document
    page = Page(render.render_site_report(analysis))
    assert page.find("section", id="bearing") and not analysis.envelope
    assert doc["bearing"]["verdict"]["defect"] == "none"
    assert "indicators only" in "".join(page.find(id="bearing-verdict")[0]["text"])
    rows = _cells(page.find("table", id="bearing-table")[0])
    assert [r[0] for r in rows] == [f"sensor_{i:02d}" for i in range(9)]
    for r in rows:
        ch = doc["bearing"]["channels"][r[0]]
        assert r[5] == render._num(ch["rms"]) and r[7] == f"{ch['crest_factor']:.2f}"
        assert "no bearing or shaft speed" in r[11]
    assert not page.find("figure", class_="envelope") and not page.find("line", class_="marker")
    # Without bearing diagnostics there is no section at all.
    off = analyse(uri, AnalysisParams(bearing_diagnostics=False), trace_buckets=2000)
    assert off.document["bearing"] is None
    assert not Page(render.render_site_report(off)).find("section", id="bearing")


def test_fleet_pages_plot_the_envelope_of_every_channel_that_has_one(rendered):
    for stem in rendered["stems"]:
        doc, page = rendered["docs"][stem], Page(rendered["pages"][stem])
        channels = doc["bearing"]["channels"]
        assert [r[0] for r in _cells(page.find("table", id="bearing-table")[0])] == list(channels)
        with_env = [n for n, c in channels.items() if c["envelope"]]
        assert [f["attrs"]["data-channel"] for f in page.find("figure", class_="envelope")] == with_env
    # 1 kHz fleet files: some spindles turn slowly enough for envelope analysis, some not.
    all_channels = [c for d in rendered["docs"].values() for c in d["bearing"]["channels"].values()]
    assert any(c["envelope"] for c in all_channels) and not all(c["envelope"] for c in all_channels)


def test_envelope_plot_escapes_marker_labels():
    freqs = np.arange(200) * 0.5
    marker = {"label": '<b onclick="x">2xBPFI</b> & "q"', "defect": "<i>inner</i>", "harmonic": 2,
              "nominal_hz": 40.0, "hz": 40.5}
    page = Page(render.envelope_svg(freqs, np.ones(200), [marker], highlight="<i>inner</i>"))
    assert not page.find("b") and not page.find("i") and page.unbalanced == []
    line = page.find("line", class_="marker")[0]
    assert line["attrs"]["data-label"] == marker["label"] and line["attrs"]["data-defect"] == marker["defect"]
    assert "verdict" in line["attrs"]["class"].split()
    assert "".join(page.find("text", class_="marker-label")[0]["text"]) == marker["label"]


# -- escaping ------------------------------------------------------------------------------

EVIL_SITE = "<script>alert(1)</script>"
EVIL_REGION = "\"R&D\" eu-'west' & <b>co</b>"
EVIL_CHANNEL = "<img src=x onerror=alert(2)>"
EVIL_LABEL = "bearing \"1\" & <i>hot</i>"


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> dict:
    """A site whose id, region, channel name and label are markup, with events on that
    channel, run through the slice with the report hook."""
    folder = tmp_path_factory.mktemp("evil")
    layout = default_layout(1000.0)
    chans = list(layout.channels)
    chans[9] = Channel(EVIL_CHANNEL, "bearing_temperature", "degC", EVIL_LABEL, "spindle_1")
    layout = replace(layout, channels=tuple(chans))
    data = fleet_channels(20_000, seed=5)
    data["sensor_09"][12_000:12_003] += 40.0  # events, and a max over the critical 95 degC
    data = {(EVIL_CHANNEL if k == "sensor_09" else k): v for k, v in data.items()}
    uri = write_telemetry(folder / "evil.parquet", data, layout=layout, site_id=EVIL_SITE,
                          region=EVIL_REGION)
    root = folder / "results"
    paths = jobs.Paths(str(root), RUN)
    summary = jobs.run_slice([("evil", uri)], paths, AnalysisParams(), log=lambda line: None,
                             on_result=render.site_report_hook(paths))
    assert summary.count("OK") == 1, [f.line() for f in summary.files]
    return {"root": root, "page": (root / "reports" / RUN / "evil.html").read_text(),
            "doc": json.loads((root / "results" / RUN / "evil.json").read_text())}


def test_site_report_escapes_data_strings(evil):
    doc = evil["doc"]
    assert (doc["site_id"], doc["region"]) == (EVIL_SITE, EVIL_REGION)
    assert any(e["channel"] == EVIL_CHANNEL for e in doc["events"])
    page = Page(evil["page"])
    assert not page.find("script") and not page.find("img") and not page.find("b") \
        and not page.find("i")
    assert not [(el["tag"], a) for el in page.elements for a in el["attrs"] if a.startswith("on")]
    # The strings are shown as text, whole.
    for s in (EVIL_SITE, EVIL_REGION, EVIL_CHANNEL, EVIL_LABEL):
        assert s in page.text
    assert "".join(page.find(id="site-id")[0]["text"]) == EVIL_SITE
    assert [f["attrs"]["data-channel"] for f in page.find("figure", class_="timeline")][0] \
        == EVIL_CHANNEL
    assert EVIL_SITE in "".join(page.find("title")[0]["text"])


def test_index_escapes_data_strings(evil):
    text = render.render_index(str(evil["root"]))
    page = Page(text)
    assert page.unbalanced == []
    scripts = page.find("script")
    assert len(scripts) == 1 and "alert" not in "".join(scripts[0]["text"])
    assert not page.find("img") and not page.find("b")
    assert not [(el["tag"], a) for el in page.elements for a in el["attrs"] if a.startswith("on")]
    row = page.find("tr", data_health="critical")[0]
    assert row["attrs"]["data-site"] == EVIL_SITE and row["attrs"]["data-region"] == EVIL_REGION
    assert [o["attrs"]["value"] for o in page.find("option")
            if o["attrs"]["value"] == EVIL_REGION] == [EVIL_REGION]
    assert EVIL_CHANNEL in "".join(row["text"])


# -- the index -----------------------------------------------------------------------------

def test_index_rows_and_links(rendered):
    root = rendered["root"]
    text = (root / "index.html").read_text()
    assert external_refs(text) == []
    page = Page(text)
    rows = [el for el in page.elements if el["tag"] == "tr" and "data-site" in el["attrs"]]
    docs = rendered["docs"]
    assert sorted(r["attrs"]["data-site"] for r in rows) == sorted(d["site_id"] for d in docs.values())
    order = {h: i for i, h in enumerate(render.HEALTH_ORDER)}
    ranks = [order[r["attrs"]["data-health"]] for r in rows]
    assert ranks == sorted(ranks), "worst health first"
    for r in rows:
        doc = next(d for d in docs.values() if d["site_id"] == r["attrs"]["data-site"])
        assert r["attrs"]["data-health"] == doc["report"]["equipment_health"]
        assert r["attrs"]["data-region"] == doc["region"]
        link = next(descendants(r, "a"))
        target = root / link["attrs"]["href"]
        assert link["attrs"]["href"] == f"reports/latest/{doc['site_id']}.html"
        assert target.is_file() and doc["site_id"] in target.read_text()
        cells = ["".join(td["text"]) for td in descendants(r, "td")]
        assert int(cells[3]) == sum(s["event_count"] for s in doc["sensor_stats"].values())
        worst = render.flagged_channels(doc)
        assert cells[4].split(" ")[0] == (worst[0]["name"] if worst else "-")
    critical = [r for r in rows if r["attrs"]["data-health"] == "critical"]
    assert [r["attrs"]["data-site"] for r in critical] == ["site-0001"]
    # Its overheated bearing, over the critical limit, is the worst channel.
    assert "".join(list(descendants(critical[0], "td"))[4]["text"]).startswith("sensor_09 ")


def test_index_without_results_is_an_error(tmp_path):
    with pytest.raises(StorageError, match="no result documents"):
        render.render_index(str(tmp_path))


def test_index_row_without_report_has_no_link(rendered, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(rendered["root"] / "results", root / "results")
    page = Page(render.render_index(str(root)))
    assert not page.find("a", class_="site-link")
    assert "(no report)" in page.text


# -- re-rendering and the command line ---------------------------------------------------

def _cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="telemetry-lab")
    render.add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_report_site_rerenders_identical_pages(rendered, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(rendered["root"] / "results", root / "results")
    assert _cli("report", "site", "--results", str(root), "--run-id", RUN) == 0
    for stem in rendered["stems"]:
        again = (root / "reports" / RUN / f"{stem}.html").read_text()
        assert again == rendered["pages"][stem]
        assert (root / "reports" / "latest" / f"{stem}.html").read_text() == again
    assert capsys.readouterr().out.count("OK   ") == len(rendered["stems"])
    assert _cli("report", "index", "--results", str(root)) == 0
    assert (root / "index.html").is_file()


def test_report_site_for_an_older_run_leaves_latest_alone(rendered, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(rendered["root"] / "results", root / "results")
    stem = rendered["stems"][0]
    old = json.loads((root / "results" / RUN / f"{stem}.json").read_text())
    old["run_id"] = "r0"
    (root / "results" / "r0").mkdir()
    (root / "results" / "r0" / f"{stem}.json").write_text(json.dumps(old))
    assert _cli("report", "site", "--results", str(root), "--run-id", "r0") == 0
    assert (root / "reports" / "r0" / f"{stem}.html").is_file()
    assert not (root / "reports" / "latest").exists()


def test_render_from_result_refuses_a_changed_source(rendered, tmp_path):
    stem = "site-0001"
    doc = dict(rendered["docs"][stem])
    doc["events"] = doc["events"][1:]
    uri = tmp_path / f"{stem}.json"
    uri.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="does not reproduce the result's events") as info:
        render.render_from_result(str(uri))
    assert info.value.file == str(uri)


def test_report_site_failure_sets_exit_code_and_goes_on(rendered, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(rendered["root"] / "results", root / "results")
    (root / "results" / RUN / "site-0000.json").write_text("{not json")
    code = _cli("report", "site", "--results", str(root), "--run-id", RUN)
    assert code == DataError.exit_code
    out = capsys.readouterr().out
    assert "FAIL site-0000 DataError" in out and out.count("OK   ") == len(rendered["stems"]) - 1


def test_templates_must_be_found(tmp_path, monkeypatch, rendered):
    monkeypatch.setenv(render.REPORTS_DIR_ENV, str(tmp_path))
    with pytest.raises(ReportError, match=re.escape(str(tmp_path))):
        render.render_index(str(rendered["root"]))
    monkeypatch.setenv(render.REPORTS_DIR_ENV, str(REPO / "reports"))
    assert render.reports_dir() == REPO / "reports"


def test_report_without_traces_is_refused(small_fleet):
    analysis = analyse(str(small_fleet["dir"] / "site-0001.parquet"))
    with pytest.raises(ReportError, match="trace_buckets") as info:
        render.render_site_report(analysis)
    assert info.value.channel == "sensor_09"


# -- S3 ------------------------------------------------------------------------------------

@pytest.fixture
def s3_bucket(monkeypatch):
    """An S3 server (moto) on 127.0.0.1 with an empty bucket; yields a boto3 client."""
    from moto.server import ThreadedMotoServer
    import boto3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="fleet")
    yield client
    server.stop()


def test_reports_and_index_in_a_bucket_are_served_as_html(s3_bucket, small_fleet, rendered):
    entries = manifest_mod.entries(manifest_mod.load(small_fleet["manifest"]))[:2]
    root = "s3://fleet/out"
    paths = jobs.Paths(root, RUN)
    summary = jobs.run_slice(entries, paths, AnalysisParams(), log=lambda line: None,
                             on_result=render.site_report_hook(paths))
    assert summary.count("OK") == 2, [f.line() for f in summary.files]
    assert render.write_index(root) == "s3://fleet/out/index.html"
    for stem, _ in entries:
        for key in (f"out/reports/{RUN}/{stem}.html", f"out/reports/latest/{stem}.html"):
            obj = s3_bucket.get_object(Bucket="fleet", Key=key)
            assert obj["ContentType"] == render.HTML_CONTENT_TYPE
            # Same analysis, same page (up to the timings), whether in a folder or a bucket.
            here, there = (text.split('<section id="run-info">') for text in
                           (obj["Body"].read().decode(), rendered["pages"][stem]))
            assert len(here) == 2 and here[0] == there[0]
    index = s3_bucket.get_object(Bucket="fleet", Key="out/index.html")
    assert index["ContentType"] == render.HTML_CONTENT_TYPE
    links = [a["attrs"]["href"] for a in Page(index["Body"].read().decode()).find("a", class_="site-link")]
    assert sorted(links) == sorted(f"reports/latest/{stem}.html" for stem, _ in entries)
