"""Take the documentation's screenshot of the status page: docs/img/status-page.png.

    python bench/status_page_screenshot.py [--out docs/img/status-page.png] [--keep DIR]

Builds a demo in a temporary folder (a config, a local "server" folder, an SQLite store),
makes real runs with the installed `campaign-sync` (twelve imports of a newsletter list with
rejected and blocklisted rows, a blocklist import, a failing import, an export that never
ran, an import whose last run is three days old, so overdue), holds one job running the way
a live run does (its lock and a `running` record of this process), starts
`campaign-sync serve` on a free loopback port and photographs `/` in headless Chromium
(Debian's `chromium`, driven by Playwright from the `test` extra). Needs the `serve` extra.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# No network here: without these Chromium waits on refused connections at start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
  partner:
    type: local
    path: partner
jobs:
  newsletter-import:
    type: recipient-import
    list: newsletter
    schedule: daily 02:30
    source: {server: partner, path: "/in/newsletter_{date:%Y%m%d}.csv"}
    max_rejects: 20%
  shop-import:
    type: recipient-import
    list: shop
    schedule: hourly :15
    source: {server: partner, path: /in/shop.csv}
  bounces-import:
    type: bounce-import
    schedule: daily 04:00
    source: {server: partner, path: "/in/bounces_{date:%Y%m%d}.csv"}
  events-import:
    type: recipient-import
    list: events
    schedule: daily 05:00
    source: {server: partner, path: /in/events.csv}
  newsletter-export:
    type: recipient-export
    list: newsletter
    schedule: weekly mon 06:00
    target: {server: partner, path: /out/newsletter.csv}
    fields: [email, first_name]
  blocklist-import:
    type: blocklist-import
    schedule: daily 01:00
    source: {server: partner, path: /in/blocklist.csv}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "status-page.png")
    parser.add_argument("--keep", type=Path, help="build the demo here and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="status-page-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        config = build_demo(folder)
        with held_running(folder, "shop-import", minutes=4), served(config) as url:
            photograph(url, args.out)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {args.out}")


def cli(config: Path, *args: str, check: bool = True) -> None:
    done = subprocess.run(
        ["campaign-sync", "--config", str(config), *args], capture_output=True, text=True
    )
    if check and done.returncode != 0:
        sys.exit(f"campaign-sync {' '.join(args)} failed: {done.stderr.strip()}")


def build_demo(folder: Path) -> Path:
    """The demo's config and store, with real runs of every job but the running one."""
    config = folder / "campaign-sync.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    inbox = folder / "partner" / "in"
    inbox.mkdir(parents=True)
    (inbox / "blocklist.csv").write_text("pattern,reason\n*@spam.example,complaints\n")
    cli(config, "import", "blocklist-import")
    shuffle = random.Random(7)  # the same picture every time
    for day in range(1, 13):
        date = datetime.date(2026, 11, 24) + datetime.timedelta(days=day)
        rows = ["email,first_name"]
        rows += [f"reader{n}@example.com,Reader {n}" for n in range(400 + day * 35)]
        rows += [f"bot{n}@spam.example,Bot" for n in range(shuffle.randint(5, 40))]
        rows += [f"broken-address-{n},X" for n in range(shuffle.randint(0, 30) + (day == 9) * 60)]
        (inbox / f"newsletter_{date:%Y%m%d}.csv").write_text("\n".join(rows) + "\n")
        cli(config, "import", "newsletter-import", "--date", date.isoformat(), check=False)
    (inbox / "bounces_20261130.csv").write_text(
        "email,type\nreader3@example.com,hard\nreader8@example.com,soft\n"
    )
    cli(config, "import", "bounces-import", "--date", "2026-11-30")
    cli(config, "import", "bounces-import", check=False)  # no file for today: it fails
    (inbox / "events.csv").write_text("email\nguest1@example.com\nguest2@example.com\n")
    cli(config, "import", "events-import")
    age_runs(folder / "store.db", "events-import", "-3 days")  # missed its last three days
    (inbox / "shop.csv").write_text("email\nbuyer1@example.com\nbuyer2@example.com\n")
    cli(config, "import", "shop-import")
    age_runs(folder / "store.db", "shop-import", "-1 hours")  # the run before the running one
    return config


def age_runs(store: Path, job: str, shift: str) -> None:
    """Move `job`'s runs back by `shift` (an SQLite modifier such as `-3 days`)."""
    with sqlite3.connect(store) as conn:
        conn.execute(
            "UPDATE runs SET started = strftime('%Y-%m-%dT%H:%M:%f+00:00', started, ?), "
            "finished = strftime('%Y-%m-%dT%H:%M:%f+00:00', finished, ?) WHERE job = ?",
            (shift, shift, job),
        )
        conn.execute(
            "UPDATE jobs SET first_seen = strftime('%Y-%m-%dT%H:%M:%f+00:00', first_seen, "
            "'-30 days') WHERE name = ?",
            (job,),
        )


class held_running:  # noqa: N801 - used as a context manager, like contextlib's
    """`job` shown running since `minutes` ago: its lock held and a `running` record of this
    process, as a run in progress leaves them."""

    def __init__(self, folder: Path, job: str, minutes: int) -> None:
        self.folder, self.job, self.minutes = folder, job, minutes

    def __enter__(self) -> None:
        locks = self.folder / "var" / "locks"
        self.fd = os.open(locks / f"{self.job}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            minutes=self.minutes, seconds=12
        )
        with sqlite3.connect(self.folder / "store.db") as conn:
            conn.execute(
                "INSERT INTO runs (job, type, status, pid, host, started) "
                "VALUES (?, 'recipient-import', 'running', ?, ?, ?)",
                (self.job, os.getpid(), socket.gethostname(), started.isoformat()),
            )

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class served:  # noqa: N801 - used as a context manager
    """`campaign-sync serve` on a free loopback port, until the block ends (its URL)."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def __enter__(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            ["campaign-sync", "--config", str(self.config), "serve", "--bind", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL,  # its access log
        )
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=10):
                    return url
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve ended: exit code {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("serve did not answer within 60 s") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright (never a browser it downloads)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def photograph(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            # The overview and the first cards: the picture the docs need, at a size they can
            # keep in git (the full page of six jobs is three times as tall).
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.goto(url)
            page.screenshot(path=str(out))
        finally:
            browser.close()


if __name__ == "__main__":
    main()
