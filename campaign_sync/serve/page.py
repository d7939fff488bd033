"""The HTML status page at `/`: every configured job, its state, its recent runs and a chart.

One self-contained document: CSS inline, charts as inline SVG, no font, script or image
from anywhere. Everything it says is in the HTML, so it reads the same without JavaScript;
the one small script only ticks the elapsed time of running jobs between two refreshes
(the page reloads itself every REFRESH_SECONDS). States follow `list-jobs` exactly (they
come from the same function), and every state has its word beside its colour. Whatever
comes from the config or the store (job and list names, file names, error texts) is
escaped: a partner chooses file names, and an error may quote them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from html import escape
from typing import Any

from ..config.model import Config
from ..core.schedule import zone
from ..ops import monitor
from ..store.base import Store
from . import chart

REFRESH_SECONDS = 30
RECENT_RUNS = 5  # rows of each job's run table
CHART_RUNS = 30  # runs each import job's chart looks back over

STATES = ("running", "failing", "overdue", "never-run", "idle")  # worst first, for the summary


@dataclass(frozen=True)
class JobView:
    """One job as the page shows it: its list-jobs entry, its newest runs, its chart."""

    state: dict[str, Any]
    runs: list[dict[str, Any]]  # newest first, at most CHART_RUNS
    kind: str


def status_page(config: Config, store: Store | None, now: datetime.datetime) -> str:
    """The status page as one HTML document, read from the open read-only `store` (None
    when no run has created it yet) as of `now` (aware, UTC)."""
    tz = zone(config.timezone)
    return render(gather(config, store, now), now.astimezone(tz))


def gather(config: Config, store: Store | None, now: datetime.datetime) -> list[JobView]:
    """Each configured job's state (as list-jobs has it) and its newest runs."""
    states = monitor.job_states(config, store, now)
    return [
        JobView(
            state,
            monitor.history(store, state["name"], CHART_RUNS),
            config.jobs[state["name"]].kind,
        )
        for state in states
    ]


def render(jobs: list[JobView], now: datetime.datetime) -> str:
    """The document for `jobs` as of `now` (in the config's time zone)."""
    body = "".join(_card(job, now, index) for index, job in enumerate(jobs))
    if not jobs:
        body = '<p class="empty">No job is configured.</p>'
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no request for /favicon.ico
        "<title>campaign-sync status</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>campaign-sync</h1>{_summary(jobs, now)}</header>"
        f"{_overview(jobs, now)}"
        f'<main class="cards">{body}</main>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------- the parts


def _summary(jobs: list[JobView], now: datetime.datetime) -> str:
    counted = {name: 0 for name in STATES}
    for job in jobs:
        counted[job.state["state"]] = counted.get(job.state["state"], 0) + 1
    tally = " · ".join(
        f'<span class="tally">{count} {name}</span>' for name, count in counted.items() if count
    )
    return (
        f'<p class="meta">{len(jobs)} job{"s" if len(jobs) != 1 else ""}: {tally}<br>'
        f"as of {_time(now.isoformat(), now)} · reloads every {REFRESH_SECONDS} s</p>"
    )


def _overview(jobs: list[JobView], now: datetime.datetime) -> str:
    if not jobs:
        return ""
    rows = "".join(
        f'<tr class="job" data-job="{escape(job.state["name"])}">'
        f'<th scope="row"><a href="#job-{index}">{escape(job.state["name"])}</a></th>'
        f"<td>{_badge(job.state, now)}</td>"
        f"<td>{_next_run(job.state, now)}</td>"
        f"<td>{_last_run(job.state, now)}</td></tr>"
        for index, job in enumerate(jobs)
    )
    return (
        '<table class="overview"><caption>Jobs</caption><thead><tr><th scope="col">Job</th>'
        '<th scope="col">State</th><th scope="col">Next run</th>'
        f'<th scope="col">Last run</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _card(job: JobView, now: datetime.datetime, index: int) -> str:
    state = job.state
    details = [f"<dt>Type</dt><dd>{escape(state['type'])}</dd>"]
    if state["list"]:
        details.append(f"<dt>List</dt><dd>{escape(state['list'])}</dd>")
    details.append(f"<dt>Schedule</dt><dd>{escape(state['schedule'] or 'none (run by hand)')}</dd>")
    details.append(f"<dt>Next run</dt><dd>{_next_run(state, now)}</dd>")
    details.append(f"<dt>Last run</dt><dd>{_last_run(state, now)}</dd>")
    chart_html = ""
    if job.kind == "import":
        points = chart.chart_points(job.runs)
        chart_html = (
            f'<figure class="counts"><figcaption>Rows per run, last {CHART_RUNS} runs'
            f"</figcaption>{chart.counts_chart(points, state['name'])}"
            f"{chart.legend(points)}</figure>"
        )
    return (
        f'<section class="card card-{escape(state["state"])}" id="job-{index}" '
        f'data-job="{escape(state["name"])}">'
        f"<h2>{escape(state['name'])} {_badge(state, now)}</h2>"
        f'<div class="facts"><dl>{"".join(details)}</dl>{chart_html}</div>'
        f'<div class="history">{_runs_table(job.runs[:RECENT_RUNS], now)}</div></section>'
    )


def _badge(state: dict[str, Any], now: datetime.datetime) -> str:
    """The state in its colour and in words; a running job with its live elapsed time."""
    name = state["state"]
    text = f'<span class="state state-{escape(name)}">{escape(name)}</span>'
    running = state.get("running")
    if running:
        seconds = float(running["elapsed_seconds"])
        text += (
            f' <span class="running-for">for <span class="elapsed" data-elapsed="{seconds}">'
            f"{duration(int(seconds))}</span> on {escape(str(running['host']))} "
            f"(pid {escape(str(running['pid']))})</span>"
        )
    return text


def _next_run(state: dict[str, Any], now: datetime.datetime) -> str:
    if not state["next_run"]:
        return '<span class="none">not scheduled</span>'
    return _time(state["next_run"], now, relative=True)


def _last_run(state: dict[str, Any], now: datetime.datetime) -> str:
    last = state["last_run"]
    if not last:
        return '<span class="none">never</span>'
    when = last["finished"] or last["started"]
    return f"{_status(last['status'])} {_time(when, now, relative=True)}"


def _status(status: str) -> str:
    return f'<span class="run run-{escape(status)}">{escape(status)}</span>'


def _runs_table(runs: list[dict[str, Any]], now: datetime.datetime) -> str:
    if not runs:
        return '<p class="none">No runs yet.</p>'
    rows = "".join(
        f'<tr class="run-row" data-run="{escape(str(run["run_id"]))}">'
        f"<td>{escape(str(run['run_id']))}</td><td>{_status(run['status'])}</td>"
        f"<td>{_time(run['started'], now)}</td>"
        f"<td>{duration(run['duration_seconds']) if run['duration_seconds'] is not None else ''}"
        f"</td><td>{_counts(run['counts'])}</td><td>{_note(run)}</td></tr>"
        for run in runs
    )
    return (
        f'<table class="runs"><caption>Last runs</caption><thead><tr><th scope="col">Run</th>'
        '<th scope="col">Status</th><th scope="col">Started</th><th scope="col">Took</th>'
        f'<th scope="col">Counts</th><th scope="col">Note</th></tr></thead><tbody>{rows}'
        "</tbody></table>"
    )


def _counts(counts: dict[str, int]) -> str:
    """The counts that say something: `read` always, the others when not zero."""
    shown = [
        f"{escape(name.replace('_', ' '))} {value:,}"
        for name, value in counts.items()
        if value or name == "read"
    ]
    return escape(" · ").join(shown)


def _note(run: dict[str, Any]) -> str:
    """What went wrong, or what happened instead, and the file read."""
    parts = []
    if run["error"]:
        parts.append(f'<span class="error">{escape(run["error"])}</span>')
    elif run["message"]:
        parts.append(escape(run["message"]))
    if run["file"]:
        parts.append(f'<span class="file">{escape(run["file"]["path"])}</span>')
    return "<br>".join(parts)


def _time(stamp: str, now: datetime.datetime, *, relative: bool = False) -> str:
    """A stored or computed ISO time, shown in the config's time zone (that of `now`)."""
    moment = datetime.datetime.fromisoformat(stamp).astimezone(now.tzinfo)
    shown = moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    text = f'<time datetime="{escape(moment.isoformat())}">{escape(shown)}</time>'
    if relative:
        seconds = (moment - now).total_seconds()
        text += f' <span class="ago">({_relative(seconds)})</span>'
    return text


def _relative(seconds: float) -> str:
    if abs(seconds) < 1:
        return "now"
    span = duration(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def duration(seconds: float) -> str:
    """A span as people read it: `42 s`, `3 min 05 s`, `2 h 07 min`, `3 d 4 h`.
    The page's script formats the ticking elapsed time the same way (see SCRIPT)."""
    whole = int(seconds)
    if seconds < 10 and seconds != whole:  # a quick run's own duration
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole // 60 % 60:02d} min"
    return f"{whole // 86400} d {whole // 3600 % 24} h"


# The elapsed time of a running job, ticking from the server's figure by this browser's
# clock (never by comparing clocks); the same formatting as duration() above.
SCRIPT = """
(function () {
  var loaded = Date.now();
  var cells = document.querySelectorAll(".elapsed[data-elapsed]");
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function shown(s) {
    var w = Math.floor(s);
    if (w < 60) return w + " s";
    if (w < 3600) return Math.floor(w / 60) + " min " + pad(w % 60) + " s";
    if (w < 86400) return Math.floor(w / 3600) + " h " + pad(Math.floor(w / 60) % 60) + " min";
    return Math.floor(w / 86400) + " d " + (Math.floor(w / 3600) % 24) + " h";
  }
  function tick() {
    var passed = (Date.now() - loaded) / 1000;
    for (var i = 0; i < cells.length; i++) {
      cells[i].textContent = shown(parseFloat(cells[i].getAttribute("data-elapsed")) + passed);
    }
  }
  if (cells.length) setInterval(tick, 1000);
})();
"""

# Colours: each state's text on its tint has a contrast of at least 7:1 (WCAG AAA), and the
# state's name is always written in the badge.
CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0 auto; padding: 1rem 1.5rem 2rem; max-width: 1200px; color: #1b1f24;
  background: #f6f7f9; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
h2 { font-size: 1.1rem; margin: 0 0 .6rem; display: flex; flex-wrap: wrap; gap: .5rem;
  align-items: baseline; overflow-wrap: anywhere; }
.meta { margin: 0 0 1rem; color: #464c55; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #dde1e6;
  vertical-align: top; overflow-wrap: anywhere; }
.overview { background: #fff; margin-bottom: 1.2rem; border: 1px solid #dde1e6; }
.overview caption { padding-left: .5rem; }
.cards { display: grid; gap: 1rem; }
.card { background: #fff; border: 1px solid #dde1e6; border-left: 6px solid #8a9099;
  border-radius: 4px; padding: .8rem 1rem; min-width: 0; display: grid;
  grid-template-columns: minmax(300px, 380px) minmax(0, 1fr); gap: 0 1.5rem; }
.card h2 { grid-column: 1 / -1; }
@media (max-width: 760px) { .card { grid-template-columns: minmax(0, 1fr); } }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem; margin: 0 0 .6rem; }
dt { color: #464c55; }
dd { margin: 0; }
.state { display: inline-block; font-weight: 700; font-size: .85rem; padding: .05rem .5rem;
  border-radius: 3px; border: 1px solid currentColor; white-space: nowrap; }
.state::before { margin-right: .3rem; }
.state-idle { color: #0f5323; background: #e3f4e8; }
.state-idle::before { content: "\\2713"; }
.state-running { color: #0a3f80; background: #e2eefc; }
.state-running::before { content: "\\25B6"; }
.state-overdue { color: #5c3b00; background: #fdf0cf; }
.state-overdue::before { content: "!"; }
.state-failing { color: #8c1010; background: #fde4e4; }
.state-failing::before { content: "\\2717"; }
.state-never-run { color: #3a3f45; background: #eceef1; }
.state-never-run::before { content: "\\2013"; }
.card-idle { border-left-color: #1f7a3a; }
.card-running { border-left-color: #1a5fb4; }
.card-overdue { border-left-color: #b07400; }
.card-failing { border-left-color: #b3261e; }
.running-for { font-size: .85rem; color: #0a3f80; }
.run { font-weight: 600; }
.run-failed, .run-interrupted, .error { color: #8c1010; }
.run-succeeded { color: #0f5323; }
.run-running { color: #0a3f80; }
.file { color: #464c55; font-family: ui-monospace, monospace; font-size: .8rem; }
.none, .ago, .no-chart { color: #5b626b; }
.runs { font-size: .85rem; }
.runs td:nth-child(-n+4), .runs th { white-space: nowrap; }
figure.counts { margin: .2rem 0 .6rem; }
figcaption { font-weight: 600; font-size: .9rem; }
.chart { display: block; max-width: 100%; height: auto; }
.chart text { font-size: 9px; fill: #464c55; }
.chart text.panel { font-style: italic; }
.axes line { stroke: #aab0b8; stroke-width: 1; }
.axes line.grid { stroke-dasharray: 2 3; }
.series polyline { stroke-width: 1.6; }
.series-read polyline, .key-read line { stroke: #1a5fb4; }
.series-read .pt { fill: #1a5fb4; }
.series-rejected polyline, .key-rejected line { stroke: #b3261e; }
.series-rejected .pt { fill: #b3261e; }
.series-suppressed polyline, .key-suppressed line { stroke: #7a5200; }
.series-suppressed .pt { fill: #7a5200; }
.legend { list-style: none; padding: 0; margin: .2rem 0 0; display: flex; flex-wrap: wrap;
  gap: .2rem 1rem; font-size: .85rem; }
.legend line { stroke-width: 2; }
.key-run { color: #5b626b; }
"""
