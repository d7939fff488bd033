"""bench/import.py --store URL: the engine's recipient import into PostgreSQL beside psql.

The reference is what a DBA would write by hand for the same merge of the same file (issue
13): `\\copy` into a temporary table, then one INSERT … SELECT … ON CONFLICT DO UPDATE that
normalises the address and builds the jsonb fields in SQL, into the store's own (empty,
keyed) recipients table; and a bare `\\copy` into an unindexed table. The engine runs in a
child process, as in the SQLite benchmark, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gen_recipients
import pg_reference
import pgserver

FIELDS = [name for name in gen_recipients.HEADER if name not in ("email", "doi_confirmed_at")]
COLUMNS = ", ".join(f"{name} text" for name in gen_recipients.HEADER)
MERGE = f"""
INSERT INTO recipients (list_id, email, fields, doi_confirmed_at, created_at, updated_at)
SELECT 1, lower(trim(email)),
       jsonb_build_object({", ".join(f"'{name}', {name}" for name in FIELDS)}),
       nullif(doi_confirmed_at, ''), :'now', :'now'
FROM incoming
ON CONFLICT (list_id, email) DO UPDATE
    SET fields = recipients.fields || excluded.fields, updated_at = excluded.updated_at
    WHERE NOT recipients.fields @> excluded.fields;
"""

Measured = tuple[float, float, int, str]


def reference(url: str, file: Path) -> dict[str, float]:
    """psql's seconds for the \\copy, the merge into the empty table, and a bare \\copy."""
    pg_reference.fresh_schema(url)
    script = (
        f"SET search_path TO {pg_reference.SCHEMA};\n"
        f"CREATE TEMP TABLE incoming ({COLUMNS});\n"
        f"\\copy incoming FROM '{file}' WITH (FORMAT csv, HEADER true)\n"
        f"{MERGE}"
        f"CREATE TABLE raw ({COLUMNS});\n"
        f"\\copy raw FROM '{file}' WITH (FORMAT csv, HEADER true)\n"
    )
    times = pg_reference.psql_times(url, script, {"now": "2026-01-01T00:00:00.000000+00:00"})
    _, _, copy_temp, merge, _, copy_bare = times
    return {"copy": copy_temp, "merge": merge, "reference": copy_temp + merge, "bare": copy_bare}


def main(
    args: argparse.Namespace,
    file: Path,
    engine: Callable[[Path, Path], Measured],
    config: str,
    record: Callable[[Any, int, str, Measured], None],
) -> None:
    """The rounds and the report. `engine`, `config` and `record` are bench/import.py's (the
    config's store line is replaced by the server's)."""
    url = args.store
    bindir = pgserver.bindir()
    if bindir:
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    names = ("empty", "full")
    times: dict[str, list[float]] = {
        name: [] for name in (*names, "copy", "merge", "reference", "bare")
    }
    cpus: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, list[int]] = {name: [] for name in names}
    figures = SimpleNamespace(times=times, cpus=cpus, peaks=peaks)  # import.py's Figures
    try:
        for round_no in range(1, args.rounds + 1):
            for name, seconds in reference(url, file).items():
                times[name].append(seconds)
            print(
                f"round {round_no}: psql \\copy {times['copy'][-1]:.2f} s + merge "
                f"{times['merge'][-1]:.2f} s; bare \\copy {times['bare'][-1]:.2f} s",
                flush=True,
            )
            work = pg_reference.OUT / f"pg-work-{round_no}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            store = f"store: {url}\nstore_schema: {pg_reference.SCHEMA}"
            (work / "campaign-sync.yaml").write_text(config.replace("store: store.db", store, 1))
            pg_reference.fresh_schema(url)
            for name in names:
                record(figures, round_no, name, engine(file, work))
            shutil.rmtree(work)
    finally:
        if not args.keep:
            with pg_reference.connection.connect(url) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {pg_reference.SCHEMA} CASCADE")
    _report(args, times, cpus, peaks)


def _report(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    cpus: dict[str, list[float]],
    peaks: dict[str, list[int]],
) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedians of {args.rounds} rounds, {args.rows:,} rows (wall; cpu = user + system):")
    print(f"  psql \\copy -> temp table      {median['copy']:7.2f} s")
    print(f"  psql merge into empty table   {median['merge']:7.2f} s")
    print(f"  reference (\\copy + merge)     {median['reference']:7.2f} s")
    print(f"  psql bare \\copy, unindexed    {median['bare']:7.2f} s")
    for name, label in (("empty", "upsert, empty list"), ("full", "upsert, full list")):
        cpu, peak = statistics.median(cpus[name]), max(peaks[name]) / 1e6
        ratio = median[name] / median["reference"]
        verdict = "ok" if ratio <= 1.5 and peak <= 150 else "MISSES TARGET"
        print(
            f"  {label:29} {median[name]:7.2f} s  client cpu {cpu:6.2f} s  peak {peak:6.1f} MB  "
            f"ratio {ratio:4.2f}x the reference, {median[name] / median['bare']:4.2f}x the "
            f"bare \\copy  ({verdict}: ≤1.5x, ≤150 MB)"
        )
