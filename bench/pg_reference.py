"""The "DBA by hand" reference for PostgreSQL imports, and what psycopg's COPY can reach.

    python bench/pg_reference.py [--rows 1000000] [--rounds 3] [--url URL]

Generates a recipient CSV (email and three fields: first_name, last_name, city; the rows of
bench/gen_recipients.py) into bench/out/, then per round times, on the same file:

* psql: `\\copy` into a temporary table, then ONE `INSERT … SELECT … ON CONFLICT DO UPDATE`
  building the jsonb fields in SQL into the store's empty recipients table (its real keyed
  table, made by the store's own migration in a fresh schema); then the same merge again
  into the now full table (every row unchanged);
* psql: a bare `\\copy` into an unindexed ordinary table (WAL-logged, like the store's);
* psycopg 3 `cursor.copy()` into a temporary table: `write_row` of the rows csv.reader parses
  from the file, and `write` of the file's raw 1 MiB blocks (COPY … FORMAT csv).

Prints every round and the medians. `--url` names a server (its superuser or a role that may
create schemas; password through PGPASSFILE/PGPASSWORD); without it, a throwaway server as the
test suite starts (tests/pgserver.py, 32 MB shared_buffers, fsync on) is used and removed.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import gen_recipients  # noqa: E402
import pgserver  # noqa: E402

from campaign_sync.store.postgres import connection, schema  # noqa: E402

COLUMNS = ("email", "first_name", "last_name", "city")
SCHEMA = "bench_pg_reference"
BLOCK = 1 << 20

# The merge a DBA would write for an upsert of this file into list 1.
MERGE = """
INSERT INTO recipients (list_id, email, fields, created_at, updated_at)
SELECT 1, lower(trim(email)),
       jsonb_build_object('first_name', first_name, 'last_name', last_name, 'city', city),
       :'now', :'now'
FROM incoming
ON CONFLICT (list_id, email) DO UPDATE
    SET fields = recipients.fields || excluded.fields, updated_at = excluded.updated_at
    WHERE NOT recipients.fields @> excluded.fields;
"""


def make_file(rows: int) -> Path:
    """bench/out/pg_recipients_<rows>.csv, made once: email + 3 fields, no quoting needed."""
    path = OUT / f"pg_recipients_{rows}.csv"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    keep = [gen_recipients.HEADER.index(name) for name in COLUMNS]
    partial = path.with_suffix(".part")
    with partial.open("w", encoding="utf-8", newline="") as out:
        for chunk in gen_recipients.generate(rows, seed=1):
            for line in chunk.splitlines():
                cells = line.split(",")
                out.write(",".join(cells[i] for i in keep) + "\n")
    partial.rename(path)
    return path


def psql_times(url: str, script: str, variables: dict[str, str]) -> list[float]:
    """Run `script` in one psql session with \\timing on; each statement's seconds."""
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run(
        args, input="\\timing on\n" + script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"psql failed: {done.stderr.strip()}")
    return [
        float(line.split()[1]) / 1000
        for line in done.stdout.splitlines()
        if line.startswith("Time: ")
    ]


def fresh_schema(admin_url: str) -> None:
    """An empty store in SCHEMA, made by the store's own migration."""
    with connection.connect(admin_url) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    with connection.connect(admin_url, SCHEMA) as conn:
        schema.migrate(conn, admin_url, SCHEMA)
        conn.execute("INSERT INTO lists (id, name, created_at) VALUES (1, 'bench', 't')")
        conn.execute("CHECKPOINT")  # each round starts with no dirty pages of the last


def round_psql(url: str, path: Path) -> dict[str, float]:
    fresh_schema(url)
    script = (
        f"SET search_path TO {SCHEMA};\n"
        "CREATE TEMP TABLE incoming (email text, first_name text, last_name text, city text);\n"
        f"\\copy incoming FROM '{path}' WITH (FORMAT csv, HEADER true)\n"
        f"{MERGE}{MERGE}"
        "CREATE TABLE raw (email text, first_name text, last_name text, city text);\n"
        f"\\copy raw FROM '{path}' WITH (FORMAT csv, HEADER true)\n"
    )
    times = psql_times(url, script, {"now": "2026-01-01T00:00:00.000000+00:00"})
    _, _, copy_temp, merge_empty, merge_full, _, copy_bare = times
    _check_merged(url, path)
    return {
        "psql \\copy -> temp table": copy_temp,
        "merge into empty table": merge_empty,
        "  \\copy + merge (the reference)": copy_temp + merge_empty,
        "merge again (all unchanged)": merge_full,
        "psql bare \\copy, unindexed table": copy_bare,
    }


def _check_merged(url: str, path: Path) -> None:
    """The merge took every row of the file: a benchmark of nothing is worse than none."""
    with connection.connect(url, SCHEMA) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT fields->>'city') FROM recipients")
        merged, cities = row.fetchone() or (0, 0)
    with path.open(encoding="utf-8") as source:
        expected = sum(1 for _ in source) - 1
    if merged != expected or cities < 2:
        raise SystemExit(f"the merge stored {merged} recipients, not {expected}")


def _timed_copy(url: str, statement: str, feed: Callable[[Any], None]) -> float:
    """Seconds for `feed(copy)` to send the file through `statement` into a temp table."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TEMP TABLE incoming (email text, first_name text, last_name text, city text)"
            " ON COMMIT DROP"
        )
        start = time.perf_counter()
        with conn.cursor().copy(statement) as copy:
            feed(copy)
        seconds = time.perf_counter() - start
        conn.commit()
    return seconds


def round_psycopg(url: str, path: Path) -> dict[str, float]:
    def rows(copy: Any) -> None:
        with path.open(encoding="utf-8", newline="") as source:
            reader = csv.reader(source)
            next(reader)
            for row in reader:
                copy.write_row(row)

    def blocks(copy: Any) -> None:
        with path.open("rb") as source:
            while block := source.read(BLOCK):
                copy.write(block)

    return {
        "psycopg copy.write_row (csv.reader)": _timed_copy(url, "COPY incoming FROM STDIN", rows),
        "psycopg copy.write (1 MiB blocks)": _timed_copy(
            url, "COPY incoming FROM STDIN WITH (FORMAT csv, HEADER true)", blocks
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="a server to use (default: a throwaway one)")
    args = parser.parse_args(argv)
    path = make_file(args.rows)
    server = None
    url = args.url
    if url is None:
        server = pgserver.PgServer().start()
        os.environ["PGPASSFILE"] = str(server.passfile)
        url = server.url()
    bindir = pgserver.bindir()
    if bindir:
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    try:
        results: dict[str, list[float]] = {}
        for number in range(1, args.rounds + 1):
            figures = round_psql(url, path) | round_psycopg(url, path)
            print(
                f"round {number}: "
                + ", ".join(f"{k.strip()} {v:.2f} s" for k, v in figures.items())
            )
            for name, seconds in figures.items():
                results.setdefault(name, []).append(seconds)
        print(
            f"\nmedians of {args.rounds}, {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB):"
        )
        for name, values in results.items():
            print(f"  {name:38} {statistics.median(values):7.2f} s")
    finally:
        with connection.connect(url) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
