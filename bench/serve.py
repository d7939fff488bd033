"""HTTP service benchmark: `GET /api/jobs/configured` at 50 concurrent connections on a store
with 200,000 runs, beside the CLI's `list-jobs --json` for the same answer.

Target: p99 latency under 50 ms. The store is filled directly (one transaction of plain
INSERTs, a few seconds), the service runs in a second process (`campaign-sync serve`), and
the load comes from wrk in a third (`apt-get install wrk`); without wrk, a Python load
generator in a separate process stands in (it needs CPU of its own, so its figures are worse).

    python bench/serve.py [--runs N] [--connections C] [--seconds S]
    python bench/serve.py --store postgresql://USER@HOST/DB [--schema NAME]
    python bench/serve.py --pg          # a throwaway PostgreSQL server (tests/pgserver.py)
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token-0123456789abcdef"
JOBS = 12  # configured jobs; each run belongs to one of them (and a few to a retired job)
CONFIG = """\
store: {store}
work_dir: var
timezone: Europe/Berlin
serve:
  token: {token}
servers:
  inbox: {{type: local, path: inbox}}
jobs:
{jobs}"""
JOB = """\
  job-{n:02d}:
    type: recipient-import
    list: list-{n:02d}
    schedule: hourly :{minute:02d}
    source: {{server: inbox, path: /import/list-{n:02d}.csv}}
"""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--store", help="a postgresql:// URL (default: an SQLite file)")
    parser.add_argument("--schema", default="bench_serve", help="the PostgreSQL store's schema")
    parser.add_argument("--pg", action="store_true", help="start a throwaway PostgreSQL")
    parser.add_argument("--python-load", action="store_true", help="do not use wrk")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # the Python load generator's URL
    return parser.parse_args()


def command() -> str:
    beside = Path(sys.executable).parent / "campaign-sync"
    return str(beside) if beside.exists() else "campaign-sync"


def write_config(folder: Path, store: str, schema: str | None) -> Path:
    jobs = "".join(JOB.format(n=n, minute=n * 4 % 60) for n in range(JOBS))
    location = f"{store}\nstore_schema: {schema}" if schema else store
    config = folder / "campaign-sync.yaml"
    config.write_text(CONFIG.format(store=location, token=TOKEN, jobs=jobs), encoding="utf-8")
    (folder / "inbox").mkdir()
    return config


def fill(config_path: Path, runs: int) -> float:
    """`runs` finished runs, spread over the jobs and the last year, through the store."""
    from campaign_sync import config as config_module
    from campaign_sync.store.open import open_store

    config = config_module.load(str(config_path))
    store = open_store(config.store, schema=config.store_schema)
    names = list(config.jobs)
    start = datetime.datetime(2025, 12, 1, tzinfo=datetime.timezone.utc)
    counts = json.dumps({"read": 1000, "inserted": 10, "updated": 990, "rejected": 0})
    rows = []
    for i in range(runs):
        started = start + datetime.timedelta(seconds=i * 150)
        finished = started + datetime.timedelta(seconds=3)
        status = "failed" if i % 97 == 0 else "skipped" if i % 31 == 0 else "succeeded"
        error = "no file on server 'inbox'" if status == "failed" else None
        # A retired job ran in the first weeks only: its newest run is far back.
        job = "retired-job" if i < runs // 20 and i % 2 else names[i % len(names)]
        rows.append((job, "recipient-import", status, 4242, "bench",
                     started.isoformat(), finished.isoformat(), counts, error))  # fmt: skip
    mark = "%s" if store.kind == "postgres" else "?"
    began = time.perf_counter()
    store.begin_write()
    # sqlite3's connection has executemany; psycopg's is on its cursors (either has cursor()).
    cursor = store.conn.cursor()
    cursor.executemany(
        "INSERT INTO runs (job, type, status, pid, host, started, finished, counts, error) "
        f"VALUES ({', '.join([mark] * 9)})",
        rows,
    )
    cursor.executemany(
        f"INSERT INTO jobs (name, first_seen) VALUES ({mark}, {mark})",
        [(name, start.isoformat()) for name in [*names, "retired-job"]],
    )
    store.commit()
    if store.kind == "postgres":
        store.conn.execute("ANALYZE runs")
    store.close()
    return time.perf_counter() - began


def serve(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [command(), "-q", "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = get(port, "/healthz")
            if status == 200:
                return process
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the service did not start: {log.read_text()}")
        time.sleep(0.1)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def cli_seconds(config: Path, rounds: int = 7) -> tuple[float, Any]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        done = subprocess.run(
            [command(), "--config", str(config), "--json", "list-jobs"],
            capture_output=True,
            check=True,
        )
        times.append(time.perf_counter() - began)
    return statistics.median(times), json.loads(done.stdout)


def single_request_ms(port: int, rounds: int = 50, pause: float = 0.0) -> float:
    """The median time of one request alone; with `pause` past the service's freshness
    (1 s), each request computes its answer anew from the store."""
    times = []
    for _ in range(rounds):
        time.sleep(pause)
        began = time.perf_counter()
        get(port, "/api/jobs/configured")
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def wrk(url: str, connections: int, seconds: int) -> tuple[float, float, float, str]:
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-H", f"Authorization: Bearer {TOKEN}", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"50%\s+([\d.]+\w+)", done.stdout).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", done.stdout).group(1))  # type: ignore[union-attr]
    return rate, p50, p99, done.stdout


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def python_load(url: str, connections: int, seconds: int) -> tuple[float, float, float, str]:
    """The load generator in its own process (its CPU is not the server's)."""
    done = subprocess.run(
        [sys.executable, __file__, "--load", url, "--connections", str(connections),
         "--seconds", str(seconds)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(done.stdout)
    return found["rate"], found["p50"], found["p99"], done.stdout


def load_generator(url: str, connections: int, seconds: int) -> None:
    """`connections` threads, each with a keep-alive connection, asking again at once."""
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    latencies: list[float] = []
    errors = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine = []
        while time.monotonic() < stop:
            began = time.perf_counter()
            conn.request("GET", "/" + path, headers={"Authorization": f"Bearer {TOKEN}"})
            answer = conn.getresponse()
            answer.read()
            mine.append(time.perf_counter() - began)
            if answer.status != 200:
                errors.append(answer.status)
        latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    print(json.dumps({
        "rate": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": len(errors),
    }))  # fmt: skip


def main() -> None:
    args = arguments()
    if args.load:
        load_generator(args.load, args.connections, args.seconds)
        return
    if not args.pg:
        measure_all(args)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    import pgserver

    server = pgserver.PgServer().start()
    try:
        os.environ.update(server.env())
        args.store = server.url()
        import psycopg

        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {args.schema}")
        measure_all(args)
    finally:
        server.stop()


def measure_all(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = args.store or str(folder / "store.db")
        config = write_config(folder, store, args.schema if args.store else None)
        filled = fill(config, args.runs)
        kind = "PostgreSQL" if args.store else "SQLite"
        print(f"store: {args.runs:,} runs written in {filled:.1f} s ({kind})")
        port = _free_port()
        service = serve(config, port, folder / "serve.log")
        try:
            cli, expected = cli_seconds(config)
            status, body = get(port, "/api/jobs/configured")
            assert status == 200 and json.loads(body) == expected, "not the CLI's answer"
            single = single_request_ms(port)
            fresh = single_request_ms(port, rounds=9, pause=1.1)
            url = f"http://127.0.0.1:{port}/api/jobs/configured"
            use_wrk = shutil.which("wrk") and not args.python_load
            measure = wrk if use_wrk else python_load
            rate, p50, p99, _raw = measure(url, args.connections, args.seconds)
        finally:
            service.terminate()
            service.wait(timeout=60)
        print(f"list-jobs --json (CLI, median of 7): {cli * 1000:.0f} ms wall")
        print(f"GET /api/jobs/configured alone (median of 50): {single:.1f} ms")
        print(f"GET /api/jobs/configured alone, computed anew (median of 9): {fresh:.1f} ms")
        print(
            f"{'wrk' if use_wrk else 'Python load generator'}, {args.connections} connections, "
            f"{args.seconds} s: {rate:,.0f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(target p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'})"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
