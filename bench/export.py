"""Export benchmark: a 1,000,000-recipient list to CSV by campaign-sync vs `sqlite3 -csv`,
or, with --store URL, from a PostgreSQL store vs `psql -c "\\copy (SELECT …) TO file CSV HEADER"`.

    python bench/export.py [--rows 1000000] [--rounds 3] [--upload] [--keep DIR]
    python bench/export.py --store postgresql://USER@HOST:PORT/DB [--rows …] [--rounds …]

Targets (issue 5): campaign-sync takes at most 1.5x the time of
`sqlite3 -csv DB "SELECT <the same columns> ..." > file`, measured in the same run, and its
peak RSS stays at most 150 MB.

The store is generated with one SQL statement (a recursive CTE), seconds for a million rows,
with what a real list has: four JSON fields (a few names with commas, quotes or umlauts, a few
formula-like cells), 2% unsubscribed, an unsubscriber list, a 50-pattern blocklist and bounces.

Each round runs both exports, alternating, so machine noise hits both alike. campaign-sync runs
in a child process through the engine (`run_job`, `export JOB --output FILE`, which writes the
same private staging file and SHA-256 as an upload), and the child reports its own peak RSS
(`resource.getrusage`). `--upload` puts the file on a local server folder instead (copy + fsync).
The sqlite3 baseline selects the same columns of the list's `active` records; campaign-sync
additionally checks unsubscribers, blocklist and bounces, neutralises and quotes.

With --store, the same SQLite store is generated and copied row for row into a fresh schema
`bench_export` of that server (the URL's role must be allowed to create it; the password comes
from PGPASSFILE or PGPASSWORD), the job runs on that store, and the baseline is psql's
client-side `\\copy` of the same columns of the `active` records in email order, as CSV with a
header. The two stores' files must be byte-identical (checked once). Targets: the same 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ["email", "first_name", "last_name", "city", "zip", "updated_at"]
TARGET_RATIO = 1.5
TARGET_RSS_MB = 150.0

CONFIG = """\
store: store.db
work_dir: var
servers:
  partner: {{type: local, path: partner}}
bounces: {{hard_limit: 3, soft_limit: 10}}
jobs:
  newsletter-export:
    type: recipient-export
    list: newsletter
    target: {{server: partner, path: /export/newsletter.csv}}
    fields: [{fields}]
    include: active
"""

GENERATE = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
SELECT 1,
    'user' || i || '.' || substr('abcdefghij', i % 10 + 1, 3) || '@mail' || (i % 997) || '.example',
    CASE WHEN i % 50 = 0 THEN 'unsubscribed' ELSE 'active' END,
    json_object(
        'first_name', CASE WHEN i % 331 = 0 THEN '=HYPERLINK(x)' ELSE 'Vorname' || (i % 1000) END,
        'last_name', CASE WHEN i % 97 = 0 THEN 'Müller, "Jr."' ELSE 'Nachname' || (i % 5000) END,
        'city', CASE i % 4 WHEN 0 THEN 'Köln' WHEN 1 THEN 'Berlin' WHEN 2 THEN 'Wien'
            ELSE 'Zürich' END,
        'zip', printf('%05d', i % 99991)),
    CASE WHEN i % 3 = 0 THEN '2026-05-01T10:00:00.000000+00:00' END,
    '2026-01-01T00:00:00.000000+00:00',
    strftime('%Y-%m-%dT%H:%M:%f000+00:00', '2026-02-01', '+' || (i % 86400) || ' seconds')
FROM n
"""


def generate(folder: Path, rows: int) -> Path:
    """The bench store: schema by campaign-sync itself, data by one SQL statement per table."""
    sys.path.insert(0, str(ROOT))
    from campaign_sync import store

    path = folder / "store.db"
    conn = store.connect(str(path))
    conn.execute("PRAGMA synchronous = OFF")  # a bench fixture, not data to keep
    with store.transaction(conn):
        conn.execute("INSERT INTO lists VALUES (1, 'newsletter', '2026-01-01T00:00:00+00:00')")
        conn.execute(GENERATE, {"rows": rows})
        stamp = "2026-03-01T00:00:00.000000+00:00"
        conn.executemany(
            "INSERT INTO blocklist (pattern, reason, created_at, modified_at) VALUES (?, '', ?, ?)",
            [(f"*@mail{n * 19}.example", stamp, stamp) for n in range(40)]
            + [(f"spam{n}?*", stamp, stamp) for n in range(10)],
        )
        conn.execute(
            "INSERT INTO unsubscribers (email, list, unsubscribed_at) "
            "SELECT email, '', ? FROM recipients WHERE substr(email, 5, 3) = '173'",
            (stamp,),
        )
        conn.execute(
            "INSERT INTO bounces (email, type, bounced_at) "
            "SELECT email, 'hard', ? FROM recipients, (SELECT 1 UNION ALL SELECT 2 "
            "UNION ALL SELECT 3) WHERE substr(email, 5, 3) = '271'",
            (stamp,),
        )
    conn.execute("ANALYZE")
    conn.close()
    return path


PG_SCHEMA = "bench_export"
PG_TABLES = {
    "lists": "id, name, created_at",
    "recipients": "list_id, email, status, fields, doi_confirmed_at, created_at, updated_at",
    "blocklist": "pattern, reason, created_at, modified_at",
    "unsubscribers": "email, list, unsubscribed_at, reason, changed_at",
    "bounces": "id, email, type, bounced_at, source, detail, changed_at",
}


def copy_to_postgres(db: Path, url: str) -> None:
    """A fresh schema on the server, made by campaign-sync, holding the SQLite store's rows."""
    import sqlite3

    import psycopg

    sys.path.insert(0, str(ROOT))
    from campaign_sync.store.postgres import connection, schema

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        admin.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    pg = connection.connect(url, PG_SCHEMA)
    schema.migrate(pg, url, PG_SCHEMA)
    lite = sqlite3.connect(db)
    with pg.transaction(), pg.cursor() as cursor:
        for table, columns in PG_TABLES.items():
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in lite.execute(f"SELECT {columns} FROM {table}"):
                    copy.write_row(row)
    pg.execute("ANALYZE")
    lite.close()
    pg.close()


def psql_query() -> str:
    columns = [
        name if name in ("email", "updated_at") else f"fields ->> '{name}'" for name in FIELDS
    ]
    return (
        f"SELECT {', '.join(columns)} FROM {PG_SCHEMA}.recipients "
        "WHERE list_id = 1 AND status = 'active' ORDER BY email"
    )


def run_psql(url: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of psql's \\copy writing the CSV (client side, like ours)."""
    psql = shutil.which("psql") or str(_pg_bindir() / "psql")
    command = f"\\copy ({psql_query()}) TO '{out}' CSV HEADER"
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run([psql, "-X", "-q", "-d", url, "-c", command], check=True)
    return time.perf_counter() - start, children_cpu() - cpu


def _pg_bindir() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import bindir

    found = bindir()
    if found is None:
        raise SystemExit("bench/export.py --store needs psql (apt-get install postgresql-client)")
    return found


def baseline_query() -> str:
    columns = [
        name if name in ("email", "updated_at") else f"json_extract(fields, '$.{name}')"
        for name in FIELDS
    ]
    return (
        f"SELECT {', '.join(columns)} FROM recipients "
        "WHERE list_id = 1 AND status = 'active' ORDER BY email"
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sqlite(db: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the sqlite3 shell writing the CSV."""
    start, cpu = time.perf_counter(), children_cpu()
    with open(out, "wb") as handle:
        subprocess.run(["sqlite3", "-csv", str(db), baseline_query()], stdout=handle, check=True)
    return time.perf_counter() - start, children_cpu() - cpu


CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from campaign_sync import config as cfg
from campaign_sync.ops.runner import RunOptions, run_job
config = cfg.load(sys.argv[2], env={})
output = None if sys.argv[3] == '-' else Path(sys.argv[3])
start = time.perf_counter()
result = run_job(config, 'newsletter-export', 'export', RunOptions(output=output))
elapsed = time.perf_counter() - start
assert result.status == 'succeeded', result.error
print(json.dumps({'seconds': elapsed, 'written': result.counts['written'],
                  'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_campaign_sync(folder: Path, out: Path, upload: bool) -> tuple[float, float, dict]:
    """Wall and CPU seconds of the child running the export, and its own report."""
    argv = [sys.executable, "-c", CHILD, str(ROOT), str(folder / "campaign-sync.yaml")]
    argv.append("-" if upload else str(out))
    start, cpu = time.perf_counter(), children_cpu()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        tree_peak = TreePeak(child.pid)
        tree_peak.start()
        output, _ = child.communicate()
        tree_peak.done.set()
        tree_peak.join()
    if child.returncode:
        raise SystemExit(f"campaign-sync failed ({child.returncode})")
    report = json.loads(output)
    report["tree_rss_kb"] = tree_peak.peak_kb
    return time.perf_counter() - start, children_cpu() - cpu, report


class TreePeak(threading.Thread):
    """The peak of the summed RSS of a process and its descendants, sampled every 20 ms.

    A big list is exported by two processes at once; getrusage cannot give their sum (and a
    spawned child's ru_maxrss includes its parent's image from before exec).
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = pid
        self.peak_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(pid) for pid in self._tree()))

    def _tree(self) -> list[int]:
        tree, frontier = [self.root], [self.root]
        while frontier:
            frontier = [child for pid in frontier for child in _children(pid)]
            tree.extend(frontier)
        return tree


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upload", action="store_true", help="upload to a local server folder")
    parser.add_argument("--keep", type=Path, help="build the store here and keep it")
    parser.add_argument("--store", help="a PostgreSQL URL: bench that store against psql")
    args = parser.parse_args()
    if not shutil.which("sqlite3"):
        sys.exit("bench/export.py needs the sqlite3 command-line shell (apt-get install sqlite3)")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        bench(folder, args)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def bench(folder: Path, args: argparse.Namespace) -> None:
    db = folder / "store.db"
    if not db.exists():
        start = time.perf_counter()
        generate(folder, args.rows)
        print(f"store: {args.rows:,} recipients generated in {time.perf_counter() - start:.1f} s")
    (folder / "partner").mkdir(exist_ok=True)
    config = CONFIG.format(fields=", ".join(FIELDS))
    (folder / "campaign-sync.yaml").write_text(config)
    ours, theirs = folder / "campaign-sync.csv", folder / "sqlite3.csv"
    run_sqlite(db, theirs)  # warm-up: the store in the page cache for both
    if args.store:
        bench_postgres(folder, args, config)
        return
    sqlite_times, sqlite_cpu, cs_walls, cs_cpu, cs_inner, rss = [], [], [], [], [], []
    tree_rss: list[float] = []
    for _ in range(args.rounds):
        wall, cpu = run_sqlite(db, theirs)
        sqlite_times.append(wall)
        sqlite_cpu.append(cpu)
        wall, cpu, report = run_campaign_sync(folder, ours, args.upload)
        cs_walls.append(wall)
        cs_cpu.append(cpu)
        cs_inner.append(report["seconds"])
        rss.append(report["rss_kb"] / 1024)
        tree_rss.append(report["tree_rss_kb"] / 1024)
    if args.upload:
        ours = folder / "partner" / "export" / "newsletter.csv"
    print(
        f"rows: campaign-sync {report['written']:,} (active after all checks), "
        f"sqlite3 {count_lines(theirs):,} (status = 'active')"
    )
    print(f"sizes: campaign-sync {ours.stat().st_size:,} B, sqlite3 {theirs.stat().st_size:,} B")
    show("sqlite3 -csv", sqlite_times)
    show("campaign-sync (child process)", cs_walls)
    show("  of which run_job", cs_inner)
    show("sqlite3 -csv, CPU", sqlite_cpu)
    show("campaign-sync, CPU (all processes)", cs_cpu)
    cpu_ratio = statistics.median(cs_cpu) / statistics.median(sqlite_cpu)
    print(
        f"CPU ratio (medians): {cpu_ratio:.2f}x  (for a loaded machine, where wall time is noise)"
    )
    ratio = statistics.median(cs_walls) / statistics.median(sqlite_times)
    # A big list is read in parts by two processes: their summed RSS is what counts.
    peak = max(max(rss), max(tree_rss))
    print(
        f"ratio (medians): {ratio:.2f}x  target <= {TARGET_RATIO}x  "
        f"{'OK' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    print(
        f"peak RSS: {peak:.1f} MB (export process {max(rss):.1f} MB; with its part "
        f"process, sampled: {max(tree_rss):.1f} MB; max of {len(rss)})  "
        f"target <= {TARGET_RSS_MB:.0f} MB  "
        f"{'OK' if peak <= TARGET_RSS_MB else 'MISSED'}"
    )


def bench_postgres(folder: Path, args: argparse.Namespace, config: str) -> None:
    start = time.perf_counter()
    copy_to_postgres(folder / "store.db", args.store)
    print(f"store: copied into {PG_SCHEMA} in {time.perf_counter() - start:.1f} s")
    ours, theirs = folder / "campaign-sync-pg.csv", folder / "psql.csv"
    # The SQLite store's file, for the byte comparison.
    run_campaign_sync(folder, folder / "campaign-sync.csv", upload=False)
    store_line = f"store: '{args.store}'\nstore_schema: {PG_SCHEMA}\n"
    (folder / "campaign-sync.yaml").write_text(config.replace("store: store.db\n", store_line))
    run_psql(args.store, theirs)  # warm-up: the tables in the server's cache for both
    psql_times, psql_cpu, cs_walls, cs_cpu, cs_inner, rss = [], [], [], [], [], []
    for _ in range(args.rounds):
        wall, cpu = run_psql(args.store, theirs)
        psql_times.append(wall)
        psql_cpu.append(cpu)
        wall, cpu, report = run_campaign_sync(folder, ours, args.upload)
        cs_walls.append(wall)
        cs_cpu.append(cpu)
        cs_inner.append(report["seconds"])
        rss.append(report["rss_kb"] / 1024)
    same = ours.read_bytes() == (folder / "campaign-sync.csv").read_bytes()
    print(f"rows: campaign-sync {report['written']:,}, psql {count_lines(theirs) - 1:,}")
    print(f"same bytes as from the SQLite store: {'yes' if same else 'NO'}")
    show("psql \\copy … CSV HEADER", psql_times)
    show("campaign-sync (child process)", cs_walls)
    show("  of which run_job", cs_inner)
    show("psql, CPU (client)", psql_cpu)
    show("campaign-sync, CPU (client)", cs_cpu)
    ratio = statistics.median(cs_walls) / statistics.median(psql_times)
    print(
        f"ratio (medians): {ratio:.2f}x  target <= {TARGET_RATIO}x  "
        f"{'OK' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    print(f"peak RSS: {max(rss):.1f} MB  target <= {TARGET_RSS_MB:.0f} MB")


def show(label: str, samples: list[float]) -> None:
    runs = " ".join(f"{s:.2f}" for s in samples)
    print(f"{label:32} median {statistics.median(samples):6.2f} s   runs: {runs}")


if __name__ == "__main__":
    os.environ.pop("CAMPAIGN_SYNC_CONFIG", None)
    main()
