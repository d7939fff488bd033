"""Import benchmark: a recipient upsert beside `sqlite3 DB ".mode csv" ".import FILE t"`,
or with --store URL into PostgreSQL beside what a DBA would write by hand in psql.

    python bench/import.py [--rows 1000000] [--rounds 3] [--keep] [--store URL]

Generates a realistic recipient file (10 columns, ~80 bytes a row) into bench/out/, then per
round times, side by side on the same file:

* the sqlite3 CLI importing it into a fresh table (the yardstick);
* the store's side alone: rows already parsed by the CLI (untimed), SQLite normalising,
  building the JSON, sorting, inserting into an empty list and committing — no Python per
  row. No engine on this schema can be faster; its ratio shows what is left for the rest;
* `upsert` into an empty list (every row inserted);
* `upsert` of the same file again into the now full list (every row unchanged; --force).

Each import runs in its own child process, so its peak RSS (resource.getrusage of the child)
is the import's alone (os.wait4: that child's own rusage, ru_maxrss). Prints every
round, then medians and the ratios to the sqlite3 CLI.
Targets (issue 4): ratio ≤ 2.0 for both imports, peak RSS ≤ 150 MB.

With --store URL (a role that may create schemas; its password through PGPASSFILE or
PGPASSWORD, never in the URL) each round makes a fresh store in the schema that
bench/pg_reference.py uses (bench/pg_import.py does this part) and times, on the same file:

* psql, the reference (issue 13): `\\copy` of the file into a temporary table, then ONE
  `INSERT … SELECT … ON CONFLICT DO UPDATE` building the jsonb fields in SQL into the store's
  empty recipients table, and a bare `\\copy` into an unindexed ordinary table;
* `upsert` into an empty list and again into the full list, by the engine, as above.

Prints the medians and the ratios to the reference (\\copy + merge) and to the bare \\copy.
Targets (issue 13): ≤ 1.5x the reference, client peak RSS ≤ 150 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
jobs:
  bench-import:
    type: recipient-import
    list: bench
    mode: upsert
    max_rejects: 1%
"""

# The child: one import of FILE with the engine, printing its counts. ROOT is put first on
# sys.path so the benchmark measures this tree, not whatever campaign_sync is installed.
CHILD = """\
import sys, json
sys.path.insert(0, {root!r})
from pathlib import Path
from campaign_sync import config
from campaign_sync.ops import runner
cfg = config.load({config!r})
options = runner.RunOptions(file=Path({file!r}), force=True)
result = runner.run_job(cfg, "bench-import", "import", options)
assert result.status == "succeeded", result.error
print(json.dumps(result.counts))
"""


# The floor: the store's side of an import into an empty list with no Python per row at all.
# The rows come already parsed (by the sqlite3 CLI, untimed) and SQLite alone normalises
# the address, builds the fields' JSON, sorts and inserts into the store and commits. No
# checks, no rejects: what any engine on this schema must spend at least.
FLOOR = """\
import sys
sys.path.insert(0, {root!r})
from campaign_sync import store
from campaign_sync.store.sqlite import staging
conn = store.connect({store!r})
conn.execute("ATTACH ? AS src", ({source!r},))
conn.execute(f"PRAGMA main.cache_size = -{{staging.MAIN_CACHE_KIB}}")
conn.execute(f"PRAGMA temp.cache_size = -{{staging.TEMP_CACHE_KIB}}")
with store.transaction(conn):
    list_id = store.list_id(conn, "bench", create=True)
    now = store.now()
    conn.execute(
        "INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, "
        "created_at, updated_at) SELECT ?, lower(trim(email)), 'active', json_object("
        "'first_name', first_name, 'last_name', last_name, 'salutation', salutation, "
        "'city', city, 'zip', zip, 'country', country, 'birthday', birthday, "
        "'customer_id', customer_id), nullif(doi_confirmed_at, ''), ?, ? "
        "FROM src.t ORDER BY 2",
        (list_id, now, now),
    )
print(conn.execute("SELECT count(*) FROM recipients").fetchone()[0], "rows")
"""


def generate(path: Path, rows: int) -> None:
    """The file, made by bench/gen_recipients.py when present (addresses branch), else inline."""
    if path.exists():
        return
    generator = ROOT / "bench" / "gen_recipients.py"
    partial = path.with_suffix(".part")
    if generator.exists():
        subprocess.run(
            [sys.executable, str(generator), str(partial), "--rows", str(rows)], check=True
        )
    else:
        _generate_inline(partial, rows)
    partial.replace(path)


def _generate_inline(path: Path, rows: int) -> None:
    import random

    rng = random.Random(1)
    firsts = ["Anna", "Jörg", "Lukas", "Zoë", "Max", "Sabine", "Paul", "Emma"]
    lasts = ["Müller", "Schmidt", "Weber", "Schäfer", "Koch", "Krüger", "Wolf"]
    cities = [("Berlin", "10"), ("München", "80"), ("Köln", "50"), ("Hamburg", "20")]
    domains = ["gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.com", "müller-bau.de"]
    with open(path, "w", encoding="utf-8", newline="", buffering=1 << 20) as out:
        out.write(
            "email,first_name,last_name,salutation,city,zip,country,birthday,"
            "customer_id,doi_confirmed_at\n"
        )
        for row in range(rows):
            first, last = rng.choice(firsts), rng.choice(lasts)
            city, zip_prefix = rng.choice(cities)
            doi = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z" if row % 2 else ""
            out.write(
                f"{first.lower()}.{row}@{rng.choice(domains)},{first},{last},Frau,{city},"
                f"{zip_prefix}{rng.randint(100, 999)},DE,,{100000 + row},{doi}\n"
            )


def child_run(argv: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS in bytes and stdout of a child."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chdir(cwd)
            fd = os.open(cwd / "stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    output = (cwd / "stdout.txt").read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed ({status}): {output}")
    # ru_maxrss is in KiB on Linux.
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, output.strip()


def sqlite_cli(file: Path, work: Path) -> tuple[float, float, int, str]:
    db = work / "cli.db"
    db.unlink(missing_ok=True)
    measured = child_run(["sqlite3", str(db), ".mode csv", f".import {file} t"], work)
    db.unlink()
    return measured


def store_floor(file: Path, work: Path) -> tuple[float, float, int, str]:
    source, target = work / "floor-source.db", work / "floor-store.db"
    subprocess.run(["sqlite3", str(source), ".mode csv", f".import {file} t"], check=True)
    script = FLOOR.format(root=str(ROOT), store=str(target), source=str(source))
    measured = child_run([sys.executable, "-c", script], work)
    for path in work.glob("floor-*"):
        path.unlink()
    return measured


def engine(file: Path, work: Path) -> tuple[float, float, int, str]:
    script = CHILD.format(root=str(ROOT), config=str(work / "campaign-sync.yaml"), file=str(file))
    return child_run([sys.executable, "-c", script], work)


@dataclass
class Figures:
    """Each measured import's wall seconds, CPU seconds and peak RSS, by name, per round."""

    times: dict[str, list[float]]
    cpus: dict[str, list[float]]
    peaks: dict[str, list[int]]


def record(
    figures: Figures, round_no: int, name: str, measured: tuple[float, float, int, str]
) -> None:
    """Keep one import's figures and print them."""
    seconds, cpu, rss, counts = measured
    figures.times.setdefault(name, []).append(seconds)
    figures.cpus.setdefault(name, []).append(cpu)
    figures.peaks.setdefault(name, []).append(rss)
    print(
        f"round {round_no}: {name:8} {seconds:7.2f} s wall {cpu:7.2f} s cpu "
        f"{rss / 1e6:6.1f} MB  {counts}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the stores in bench/out")
    parser.add_argument("--store", metavar="URL", help="a PostgreSQL server to import into")
    args = parser.parse_args()
    if args.store is None and shutil.which("sqlite3") is None:
        raise SystemExit("bench/import.py needs the sqlite3 command-line shell")
    OUT.mkdir(parents=True, exist_ok=True)
    file = OUT / f"recipients-{args.rows}.csv"
    generate(file, args.rows)
    print(f"file: {file} ({file.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows)")
    if args.store is not None:
        import pg_import

        pg_import.main(args, file, engine, CONFIG, record)
        return
    names = ("sqlite3", "floor", "empty", "full")
    times: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, list[int]] = {name: [] for name in names}
    for round_no in range(1, args.rounds + 1):
        work = OUT / f"work-{round_no}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / "campaign-sync.yaml").write_text(CONFIG)
        measured = [("sqlite3", *sqlite_cli(file, work))]
        measured.append(("floor", *store_floor(file, work)))
        measured.append(("empty", *engine(file, work)))
        measured.append(("full", *engine(file, work)))
        for name, seconds, cpu, rss, counts in measured:
            record(Figures(times, cpus, peaks), round_no, name, (seconds, cpu, rss, counts))
        if not args.keep:
            shutil.rmtree(work)
    base = statistics.median(times["sqlite3"])
    base_cpu = statistics.median(cpus["sqlite3"])
    print(f"\nmedians of {args.rounds} rounds, {args.rows:,} rows (wall; cpu = user + system):")
    print(
        f"  sqlite3 .import      {base:7.2f} s  cpu {base_cpu:6.2f} s  "
        f"peak {max(peaks['sqlite3']) / 1e6:6.1f} MB"
    )
    floor, floor_cpu = statistics.median(times["floor"]), statistics.median(cpus["floor"])
    print(
        f"  store side alone     {floor:7.2f} s  cpu {floor_cpu:6.2f} s  "
        f"ratio {floor / base:4.2f}x wall  (SQLite only: no parsing or checks in Python; "
        "the floor of any engine on this schema)"
    )
    for name, label in (("empty", "upsert, empty list"), ("full", "upsert, full list")):
        median, cpu = statistics.median(times[name]), statistics.median(cpus[name])
        peak = max(peaks[name]) / 1e6
        verdict = "ok" if median / base <= 2.0 and peak <= 150 else "MISSES TARGET"
        print(
            f"  {label:20} {median:7.2f} s  cpu {cpu:6.2f} s  peak {peak:6.1f} MB  "
            f"ratio {median / base:4.2f}x wall, {cpu / base_cpu:4.2f}x cpu  "
            f"({verdict}: ≤2.0x, ≤150 MB)"
        )


if __name__ == "__main__":
    main()
