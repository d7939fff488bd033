"""`campaign-sync recipient ADDRESS` on a store of a million members, beside the sqlite3 CLI
(or, with --store URL, psql) running the equivalent indexed SELECTs.

    python bench/recipient.py [--rows 1000000] [--lookups 15] [--store URL|--pg] [--keep]

Builds the store once into bench/out/ (reused by later runs; --keep keeps a PostgreSQL
schema too): the recipient file of bench/gen_recipients.py imported by the engine into list
`bench`, then, by SQL, what months of runs leave beside it: a dispatch job's cut-off, a send
for every second confirmed member (~250,000), an unsubscription for every 20th member, a
soft bounce for every 25th, and 200 blocklist patterns; then ANALYZE.

Then, for --lookups addresses spread over the file (each normalised as the engine does),
times in the same run:

* `campaign-sync --json recipient ADDRESS`, the installed command in a child process, as an
  operator types it (Python's start-up and the config included);
* the sqlite3 CLI (psql for --store URL) in a child process, running the SELECTs a DBA would
  write for the same answer: the address's memberships (lists joined to the primary key),
  its unsubscriptions, bounces and sends (the jobs table joined to the sends' key), and the
  blocklist's patterns;
* the engine's lookup alone, in this process (store opened once), without the start-up;
* `campaign-sync --version`: the start-up every command pays; and `list-jobs --json`, a
  status command, which loads the config and opens the store as `recipient` does.

--pg starts a throwaway PostgreSQL server as the test suite does (tests/pgserver.py) and
removes it afterwards. Prints the medians and the ratio of `campaign-sync recipient` to the
reference tool. Each lookup reads a handful of index pages: its time does not grow with the
list.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from campaign_sync.core.addresses import normalise  # noqa: E402

SCHEMA = "bench_recipient"
CONFIG = """\
store: {store}
work_dir: var
timezone: Europe/Berlin
smtp: {{host: localhost, from: news@example.com}}
jobs:
  bench-import:
    type: recipient-import
    list: bench
    max_rejects: 1%
  welcome:
    type: doi-dispatch
    list: bench
    mailings: mailings
"""
CUTOFF = "2022-01-01T00:00:00.000000+00:00"
WHEN = "2024-06-01T00:00:00.000000+00:00"

# What months of runs leave beside the members, by SQL (both dialects read it). {n}: the
# members numbered in email order by a window function, once, into a scratch table.
EXTRAS = [
    f"INSERT INTO jobs (name, first_seen) VALUES ('welcome', '{CUTOFF}')",
    "CREATE TABLE bench_numbered AS SELECT email, doi_confirmed_at, "
    "row_number() OVER (ORDER BY email) AS n FROM recipients",
    "INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state, attempts, "
    f"created_at, updated_at) SELECT 'welcome', email, 'bench', 'welcome.eml', 'm', "
    f"'<' || n || '@bench>', 'sent', 1, '{WHEN}', '{WHEN}' FROM bench_numbered "
    f"WHERE doi_confirmed_at > '{CUTOFF}' AND n % 2 = 0",
    f"INSERT INTO unsubscribers (email, list, unsubscribed_at, reason, changed_at) "
    f"SELECT email, '', '{WHEN}', 'bench', '{WHEN}' FROM bench_numbered WHERE n % 20 = 0",
    "INSERT INTO bounces (email, type, bounced_at, source, detail, changed_at) "
    f"SELECT email, 'soft', '{WHEN}', 'bench', '', '{WHEN}' FROM bench_numbered "
    "WHERE n % 25 = 0",
    "DROP TABLE bench_numbered",
]
PATTERNS = [f"*@spam{i}.example" for i in range(100)] + [f"promo{i}*@gmx.de" for i in range(100)]


def reference_sql(address: str) -> str:
    """The SELECTs a DBA would write for what `recipient` shows (the address quoted)."""
    quoted = "'" + address.replace("'", "''") + "'"
    return (
        "SELECT l.name, r.status, r.fields, r.doi_confirmed_at, r.created_at, r.updated_at "
        f"FROM lists AS l JOIN recipients AS r ON r.list_id = l.id AND r.email = {quoted};\n"
        f"SELECT list, unsubscribed_at, reason FROM unsubscribers WHERE email = {quoted};\n"
        f"SELECT type, bounced_at, source, detail FROM bounces WHERE email = {quoted};\n"
        "SELECT s.* FROM jobs AS j JOIN sends AS s ON s.job = j.name "
        f"AND s.email = {quoted};\n"
        "SELECT pattern, reason FROM blocklist;\n"
    )


def recipients_file(rows: int) -> Path:
    """bench/out/recipients-<rows>.csv, the file bench/import.py uses, made once."""
    path = OUT / f"recipients-{rows}.csv"
    if not path.exists():
        partial = path.with_suffix(".part")
        generator = ROOT / "bench" / "gen_recipients.py"
        subprocess.run(
            [sys.executable, str(generator), str(partial), "--rows", str(rows)], check=True
        )
        partial.replace(path)
    return path


def command() -> str:
    """The installed console script beside this interpreter (an editable install of ROOT)."""
    found = Path(sys.executable).parent / "campaign-sync"
    return str(found) if found.exists() else shutil.which("campaign-sync") or "campaign-sync"


class Bench:
    """The store of one backend: built once, then read by the tools."""

    def __init__(self, rows: int, url: str | None) -> None:
        self.rows = rows
        self.url = url
        self.work = OUT / (f"recipient-pg-{rows}" if url else f"recipient-{rows}")
        self.config = self.work / "campaign-sync.yaml"
        self.db = self.work / "store.db"

    def build(self, file: Path) -> None:
        marker = self.work / "built"
        if marker.exists() and (self.url is None or self._pg_schema_exists()):
            print(f"store: reusing {self.url and SCHEMA or self.db}")
            return
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "mailings").mkdir(parents=True)
        store = "store.db" if self.url is None else f"{self.url}\nstore_schema: {SCHEMA}"
        self.config.write_text(CONFIG.format(store=store))
        if self.url is not None:
            self._sql([f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"CREATE SCHEMA {SCHEMA}"], "")
        start = time.perf_counter()
        done = subprocess.run(
            [command(), "--config", str(self.config), "--json", "import", "bench-import",
             "--file", str(file)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"the import failed: {done.stderr.strip()}")
        counts = json.loads(done.stdout)["counts"]
        print(
            f"store: imported {counts['inserted']:,} members in {time.perf_counter() - start:.0f} s"
        )
        patterns = [
            f"INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
            f"VALUES ('{p}', 'bench', '{WHEN}', '{WHEN}')"
            for p in PATTERNS
        ]
        self._sql([*EXTRAS, *patterns, "ANALYZE"], SCHEMA)
        marker.write_text("")

    def _pg_schema_exists(self) -> bool:
        import psycopg

        assert self.url is not None
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (SCHEMA,)
            ).fetchone()
        return bool(row and row[0])

    def _sql(self, statements: list[str], schema: str) -> None:
        if self.url is None:
            import sqlite3

            with sqlite3.connect(self.db) as conn:
                for statement in statements:
                    conn.execute(statement)
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            if schema:
                conn.execute(f"SET search_path TO {schema}")
            for statement in statements:
                conn.execute(statement)

    def reference(self, address: str) -> list[str]:
        """The reference tool's command line for `address`."""
        if self.url is None:
            return ["sqlite3", str(self.db), reference_sql(address)]
        script = f"SET search_path TO {SCHEMA};\n{reference_sql(address)}"
        return ["psql", "-X", "-q", "-d", self.url, "-c", script]

    def engine_lookup(self) -> Any:
        """A function timing the engine's lookup of one address in this process."""
        from campaign_sync import config as config_module
        from campaign_sync.ops import monitor
        from campaign_sync.ops.recipient import lookup

        config = config_module.load(str(self.config))
        store = monitor.open_store(config)

        def timed(address: str) -> float:
            start = time.perf_counter()
            document = lookup(config, store, address)
            seconds = time.perf_counter() - start
            assert document["lists"], f"{address} is not in the store"
            return seconds

        return timed


def timed_run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sample(file: Path, rows: int, lookups: int) -> list[str]:
    """`lookups` addresses spread evenly over the file, normalised as the store keeps them."""
    wanted = {1 + i * (rows // lookups) for i in range(lookups)}
    found = []
    with file.open(encoding="utf-8") as source:
        next(source)
        for number, line in enumerate(source, 1):
            if number in wanted:
                found.append(normalise(line.split(",", 1)[0]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=15)
    parser.add_argument(
        "--store", metavar="URL", help="a PostgreSQL server (password via PGPASSFILE)"
    )
    parser.add_argument("--pg", action="store_true", help="a throwaway PostgreSQL server")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    args = parser.parse_args()
    server = None
    if args.pg:
        import os

        import pgserver

        server = pgserver.PgServer().start()
        os.environ["PGPASSFILE"] = str(server.passfile)
        args.store = server.url()
        bindir = pgserver.bindir()
        if bindir:
            os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    try:
        run(args)
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace) -> None:
    tool = "psql" if args.store else "sqlite3"
    if shutil.which(tool) is None:
        raise SystemExit(f"bench/recipient.py needs the {tool} command-line tool")
    OUT.mkdir(parents=True, exist_ok=True)
    file = recipients_file(args.rows)
    bench = Bench(args.rows, args.store)
    try:
        bench.build(file)
        addresses = sample(file, args.rows, args.lookups)
        lookup = bench.engine_lookup()
        cs = [command(), "--config", str(bench.config), "--json", "recipient"]
        status = [command(), "--config", str(bench.config), "--json", "list-jobs"]
        times: dict[str, list[float]] = {
            "cs": [], "ref": [], "engine": [], "start": [], "status": []
        }  # fmt: skip
        for address in addresses:  # interleaved, so a noisy moment hits every tool alike
            times["cs"].append(timed_run([*cs, address]))
            times["ref"].append(timed_run(bench.reference(address)))
            times["engine"].append(lookup(address))
            times["start"].append(timed_run([command(), "--version"]))
            times["status"].append(timed_run(status))
    finally:
        if args.store and not args.keep:
            bench._sql([f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"], "")
            (bench.work / "built").unlink(missing_ok=True)
    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"\nmedians of {len(addresses)} lookups, {args.rows:,} members ({tool} reference):")
    print(f"  campaign-sync recipient      {median['cs']:8.1f} ms")
    print(f"  {tool} equivalent SELECTs   {median['ref']:8.1f} ms")
    print(f"  ratio                        {median['cs'] / median['ref']:8.1f}x")
    print(f"  engine lookup alone          {median['engine']:8.1f} ms  (in process, no start-up)")
    print(f"  campaign-sync --version      {median['start']:8.1f} ms  (the start-up alone)")
    print(f"  campaign-sync list-jobs      {median['status']:8.1f} ms  (a status command)")


if __name__ == "__main__":
    main()
