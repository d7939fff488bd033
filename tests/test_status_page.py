"""The status page at `/` in a real headless Chromium, after real runs of the installed CLI.

One store holds a job of every state: an import that succeeded three times (idle, a chart of
three runs), one that failed with an error quoting a partner's file name that holds
`<script>` (failing), an export that never ran, an import whose only run is three days old
(overdue) and an import held running: it fetches its file over SSH from a real sshd through
a proxy that stops forwarding midway, so it stays `running` until the test lets it go.
`campaign-sync serve` then serves the page; the browser checks every job's state word and
colour, the running job's ticking elapsed time, the charts' points, and that a page without
JavaScript says all the same. One browser for the module; each store gets its own page.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, SAMPLE, Workspace
from faults import Fault, FaultProxy, generate_recipients
from sshd import Sshd

from campaign_sync.serve import page as status_page

# The docs' screenshot tool starts Chromium and the service the same way this test does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import status_page_screenshot as screenshot  # noqa: E402

pytestmark = pytest.mark.stores("sqlite", "postgres")

HOSTILE = "/import/<script>window.pwned=1</script>.csv"  # a partner's file name

EXTRA_JOBS = """\
  broken-import:
    type: recipient-import
    list: newsletter
    schedule: daily 03:00
    source: {{server: inbox, path: "{hostile}"}}
  stale-import:
    type: recipient-import
    list: stale
    schedule: daily 04:00
    source: {{server: inbox, path: /import/stale.csv}}
  live-import:
    type: recipient-import
    list: live
    schedule: weekly sun 05:00
    source: {{server: partner, path: "{remote}"}}
"""

SSH_SERVER = """\
  partner:
    type: ssh
    host: 127.0.0.1
    port: {port}
    user: {user}
    key_file: {key}
    known_hosts: {known}
    protocol: sftp
    timeout: 600
    retries: 0
"""

EXPECTED = {
    "newsletter-import": "idle",
    "newsletter-export": "never-run",
    "broken-import": "failing",
    "stale-import": "overdue",
    "live-import": "running",
}
# The state's text colour as the page's CSS gives it (its word is always beside it).
COLOURS = {
    "idle": "rgb(15, 83, 35)",
    "running": "rgb(10, 63, 128)",
    "overdue": "rgb(92, 59, 0)",
    "failing": "rgb(140, 16, 16)",
    "never-run": "rgb(58, 63, 69)",
}
CHART_POINTS = {"newsletter-import": 3, "broken-import": 0, "stale-import": 1, "live-import": 0}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = screenshot.launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


def test_the_status_page_shows_every_job_in_a_browser_with_and_without_javascript(
    ws: Workspace, browser: Any, sshd: Sshd
) -> None:
    remote = generate_recipients(ws.root / "remote" / "live.csv", 20_000, seed=11)
    size = remote.stat().st_size
    with FaultProxy((sshd.host, sshd.port), [Fault("stall", size // 3)]) as proxy:
        configure(ws, sshd, proxy.port, remote)
        make_runs(ws)
        live = hold_running(ws, "live-import")
        try:
            expected = {job["name"]: job for job in list_jobs(ws)}
            assert {name: job["state"] for name, job in expected.items()} == EXPECTED
            with screenshot.served(ws.config) as url:
                for javascript in (True, False):
                    context = browser.new_context(java_script_enabled=javascript)
                    try:
                        tab = context.new_page()
                        tab.goto(url)
                        check_page(tab, expected)
                        if javascript:
                            check_ticking(tab)
                    finally:
                        context.close()
        finally:
            release(live)


def configure(ws: Workspace, sshd: Sshd, port: int, remote: Path) -> None:
    known = ws.root / "known_hosts"  # the proxy is another port: the same host key there
    known.write_text(sshd.known_hosts.read_text().replace(f":{sshd.port} ", f":{port} "))
    server = SSH_SERVER.format(port=port, user=sshd.user, key=sshd.user_key, known=known)
    text = BASE_CONFIG.format(extra=EXTRA_JOBS.format(hostile=HOSTILE, remote=remote))
    ws.write_config(text=text.replace("jobs:\n", server + "jobs:\n", 1))


def make_runs(ws: Workspace) -> None:
    """Real runs of the installed CLI: three imports, a failure, a run made three days old."""
    for day, rows in (("01", SAMPLE), ("02", SAMPLE + "broken;X;Y;\n"), ("03", SAMPLE)):
        ws.drop(f"/import/newsletter_202611{day}.csv", rows)
        done = ws.run("import", "newsletter-import", "--date", f"2026-11-{day}", "--force")
        assert done.returncode == 0, done.stderr
    failed = ws.run("import", "broken-import")
    assert failed.returncode == 3, failed.stderr
    ws.drop("/import/stale.csv", "email\nold@example.com\n")
    assert ws.run("import", "stale-import").returncode == 0
    # Cron stopped running it: its one run and its first sight move three days back.
    [(started, finished)] = ws.query(
        "SELECT started, finished FROM runs WHERE job = 'stale-import'"
    )
    ws.query(
        "UPDATE runs SET started = ?, finished = ? WHERE job = 'stale-import'",
        (days_back(started, 3), days_back(finished, 3)),
    )
    ws.query(
        "UPDATE jobs SET first_seen = ? WHERE name = 'stale-import'", (days_back(started, 30),)
    )


def days_back(stamp: Any, days: int) -> str:
    moment = (
        stamp if isinstance(stamp, datetime.datetime) else datetime.datetime.fromisoformat(stamp)
    )
    return (moment - datetime.timedelta(days=days)).isoformat(timespec="microseconds")


def hold_running(ws: Workspace, job: str) -> subprocess.Popen[str]:
    """Start `job` (its fetch stalls at the proxy) and wait until the store shows it running."""
    proc = subprocess.Popen(
        ["campaign-sync", "--config", str(ws.config), "import", job],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(j["name"] == job for j in list_jobs(ws, "--running")):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{job} ended before it was seen running: {out} {err}")
        assert time.monotonic() < deadline, f"{job} was never seen running"
        time.sleep(0.1)
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    """Stop the held run as cron's `timeout` would (it records itself interrupted)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


def list_jobs(ws: Workspace, *args: str) -> list[dict[str, Any]]:
    done = ws.run("--json", "list-jobs", *args)
    assert done.returncode == 0, done.stderr
    jobs: list[dict[str, Any]] = json.loads(done.stdout)
    return jobs


def check_page(tab: Any, expected: dict[str, dict[str, Any]]) -> None:
    """Every configured job with list-jobs' state, in words and colour, its next and last
    run, its chart's points; the hostile file name shown as text, never run as script."""
    rows = tab.locator("table.overview tr.job")
    assert [rows.nth(i).get_attribute("data-job") for i in range(rows.count())] == list(EXPECTED)
    for name, job in expected.items():
        row = tab.locator(f'table.overview tr.job[data-job="{name}"]')
        badge = row.locator(".state")
        assert badge.inner_text() == job["state"]
        assert f"state-{job['state']}" in (badge.get_attribute("class") or "").split()
        assert badge.evaluate("e => getComputedStyle(e).color") == COLOURS[job["state"]]
        shown_next = row.locator("td").nth(1).locator("time").get_attribute("datetime")
        assert same_moment(shown_next, job["next_run"])
        last = job["last_run"]
        cell = row.locator("td").nth(2)
        if last is None:
            assert cell.inner_text() == "never"
        else:
            assert cell.locator(".run").inner_text() == last["status"]
            shown = cell.locator("time").get_attribute("datetime")
            assert same_moment(shown, last["finished"] or last["started"])
        card = tab.locator(f'section.card[data-job="{name}"]')
        assert card.locator("h2 .state").inner_text() == job["state"]
        if name in CHART_POINTS:
            for series in ("read", "rejected", "suppressed"):
                assert card.locator(f"svg.chart .pt-{series}").count() == CHART_POINTS[name]
        else:
            assert card.locator("svg.chart").count() == 0
    newest = tab.locator('section.card[data-job="newsletter-import"] .runs tr.run-row').first
    assert "rejected 1" not in newest.inner_text()  # run 3: the SAMPLE again
    assert "read 3" in newest.inner_text()
    chart = tab.locator('section.card[data-job="newsletter-import"] svg.chart')
    assert "run 2: read 4, rejected 1, suppressed 0" in chart.inner_html()
    running = tab.locator('tr.job[data-job="live-import"] .elapsed')
    assert re.fullmatch(r"\d+ s|\d+ min \d\d s", running.inner_text())
    error = tab.locator('section.card[data-job="broken-import"] .error').first
    assert f"no file {HOSTILE} on server 'inbox'" in error.inner_text()
    assert tab.locator("script").count() == 1  # the page's own, and nothing from the store
    assert tab.evaluate("() => window.pwned === undefined")


def check_ticking(tab: Any) -> None:
    """With JavaScript the running job's elapsed time goes on counting in the page itself,
    not only when the page reloads (a mark on the window would not survive a reload)."""
    elapsed = tab.locator('tr.job[data-job="live-import"] .elapsed')
    before = elapsed.inner_text()
    tab.evaluate("() => { window.sameDocument = true; }")
    tab.wait_for_function(
        "before => window.sameDocument && document.querySelector("
        "'tr.job[data-job=\"live-import\"] .elapsed').textContent !== before",
        arg=before,
        timeout=60_000,
    )


def same_moment(shown: str | None, stamp: str) -> bool:
    assert shown is not None
    return datetime.datetime.fromisoformat(shown) == datetime.datetime.fromisoformat(stamp)


def test_everything_from_the_config_and_the_store_is_escaped(ws: Workspace) -> None:
    """Without a browser: a job error and a file name with markup come out as
    text, on either store; the page is one document with the one script of its own."""
    ws.write_config(text=BASE_CONFIG.format(extra=""))
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
    ws.query(
        "UPDATE runs SET status = 'failed', error = ?, file_path = ?",
        ('<script>alert("x")</script> & <b>', "<img src=x onerror=alert(1)>"),
    )
    from campaign_sync import config
    from campaign_sync.ops import monitor

    loaded = config.load(str(ws.config))
    now = datetime.datetime.now(datetime.timezone.utc)
    with monitor.opened_store(loaded) as store:
        html = status_page.status_page(loaded, store, now)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert html.count("<script>") == 1
    assert 'class="state state-failing">failing<' in html
    assert re.search(r"<svg class=\"chart\".*?</svg>", html, re.S)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.25, "0.25 s"), (3.5, "3.5 s"), (42, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
)
def test_durations_read_as_people_read_them(seconds: float, shown: str) -> None:
    assert status_page.duration(seconds) == shown


def test_before_any_run_the_page_lists_every_job_as_never_run(ws: Workspace) -> None:
    from campaign_sync import config

    loaded = config.load(str(ws.config))
    html = status_page.status_page(loaded, None, datetime.datetime.now(datetime.timezone.utc))
    assert html.count('class="state state-never-run">never-run<') == 2 * len(loaded.jobs)
    assert "No runs yet." in html
