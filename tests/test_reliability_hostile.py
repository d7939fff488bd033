"""Hostile input: fuzzed CSV files and config files, formula cells, a 1 GB line, NUL bytes,
mixed encodings, hostile remote names.

The promise checked each time: no traceback, no data loss (a failed import leaves the store
exactly as it was), and a clear error (one line naming the file and, for a broken file, the
line). Fuzzing runs in-process through the engine's own entry points (`run_job`,
`config.load`, `config.problems`) for speed, with a fixed, derandomised budget; the byte-level
cases run the real command in a child process.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from faults import (
    EXIT_FAILED,
    EXIT_OK,
    assert_no_traceback,
    child_env,
    cli_argv,
    json_out,
    peak_rss_run,
    run_cli,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from props import examples

from campaign_sync import config as config_module
from campaign_sync.errors import ConfigError
from campaign_sync.ops.runner import RunOptions, run_job

CSV_EXAMPLES = examples(int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "300")))
CONFIG_EXAMPLES = examples(int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "300")))
FUZZ = settings(
    max_examples=CSV_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
  inbox: {type: local, path: inbox}
jobs:
  plain-import:
    type: recipient-import
    list: newsletter
    format: {delimiter: ";"}
    max_rejects: 100%
  mapped-import:
    type: recipient-import
    list: newsletter
    format: {delimiter: ","}
    columns: {E-Mail: email, Vorname: first_name, DOI: doi_confirmed_at}
    max_rejects: 100%
  block-import:
    type: blocklist-import
    format: {delimiter: ";"}
    max_rejects: 100%
  unsub-import:
    type: unsubscriber-import
    format: {delimiter: ";"}
    max_rejects: 100%
  bounce-import:
    type: bounce-import
    format: {delimiter: ";"}
    max_rejects: 100%
  list-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: /export/list.csv}
    fields: [email, first_name, city, note]
"""

# The list before every fuzzed import: what must survive any failure untouched.
SEED_CSV = "email;first_name;city\nkeep@example.com;Keep;Berlin\nanna@example.com;Anna;Köln\n"


class Stage:
    """One workspace: a config, a seeded store kept as a pristine copy, a scratch file."""

    def __init__(self, root: Path):
        self.root = root
        (root / "inbox").mkdir(parents=True, exist_ok=True)
        self.config_path = root / "campaign-sync.yaml"
        self.config_path.write_text(CONFIG, encoding="utf-8")
        self.config = config_module.load(str(self.config_path), env={})
        self.db = root / "store.db"
        seed = root / "seed.csv"
        seed.write_text(SEED_CSV, encoding="utf-8")
        result = run_job(self.config, "plain-import", "import", RunOptions(file=seed))
        assert result.status == "succeeded", result.error
        self._seed_other_tables()
        self.pristine = root / "pristine.db"
        shutil.copyfile(self.db, self.pristine)
        self.before = self.recipients()
        self.before_others = self.others()
        self.file = root / "fuzz.csv"

    def reset(self) -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.pristine, self.db)

    def recipients(self) -> dict[str, tuple[str, str]]:
        conn = sqlite3.connect(self.db)
        try:
            return dict(
                (email, (status, fields))
                for email, status, fields in conn.execute(
                    "SELECT email, status, fields FROM recipients"
                )
            )
        finally:
            conn.close()

    def _seed_other_tables(self) -> None:
        """One entry in each suppression table, straight into the schema: must survive."""
        conn = sqlite3.connect(self.db)
        try:
            with conn:
                now = "2026-01-01T00:00:00.000000+00:00"
                conn.execute(
                    "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
                    "VALUES ('*@blocked.example', 'seed', ?, ?)",
                    (now, now),
                )
                conn.execute(
                    "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason) "
                    "VALUES ('gone@example.com', '', ?, 'seed')",
                    (now,),
                )
                conn.execute(
                    "INSERT INTO bounces (email, type, bounced_at, source) "
                    "VALUES ('bouncy@example.com', 'hard', ?, 'seed')",
                    (now,),
                )
        finally:
            conn.close()

    def others(self) -> dict[str, set[tuple[Any, ...]]]:
        conn = sqlite3.connect(self.db)
        try:
            return {
                "blocklist": set(conn.execute("SELECT pattern, reason FROM blocklist")),
                "unsubscribers": set(conn.execute("SELECT email, list FROM unsubscribers")),
                "bounces": set(conn.execute("SELECT email, type, source FROM bounces")),
            }
        finally:
            conn.close()

    def import_bytes(self, job: str, data: bytes) -> Any:
        self.reset()
        self.file.write_bytes(data)
        return run_job(self.config, job, "import", RunOptions(file=self.file))


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    return Stage(tmp_path_factory.mktemp("hostile"))


def check_import_outcome(stage: Stage, data: bytes, result: Any) -> None:
    """What every import, of anything, must end in."""
    assert result.status in ("succeeded", "failed"), result.status
    after = stage.recipients()
    if result.status == "failed":
        assert result.exit_code == EXIT_FAILED
        # Control characters quoted from the file are a separate, known finding (see
        # test_error_quoting_file_content_escapes_control_characters); the rest must hold.
        assert result.error, result
        assert "Traceback" not in result.error and "internal error" not in result.error, (
            result.error
        )
        assert after == stage.before, "a failed import changed the store"
        assert stage.others() == stage.before_others, "a failed import changed the store"
        return
    assert result.exit_code == EXIT_OK
    others = stage.others()
    for table, rows in stage.before_others.items():
        if table != "blocklist":  # a blocklist import may update the seed entry's reason
            assert rows <= others[table], f"{table} lost an entry"
    if "recipient" not in result.job_type:
        return
    # Upsert: nobody the file does not name disappears, and nothing is lost silently: every
    # data row read is inserted, updated, unchanged, rejected, a duplicate or suppressed.
    assert set(stage.before) <= set(after)
    counts = result.counts
    accounted = sum(
        counts.get(key, 0)
        for key in (
            "inserted",
            "updated",
            "unchanged",
            "rejected",
            "duplicates",
            "suppressed_unsubscribed",
            "suppressed_blocklisted",
        )
    )
    assert accounted == counts.get("read", 0), counts
    assert len(after) == len(stage.before) + counts["inserted"]


# --------------------------------------------------------------------------- CSV fuzzing

# Cells mix the troublemakers: delimiters, quotes, line breaks, NUL, BOM, formula starts,
# address-like text, non-ASCII, long runs.
CELL_ALPHABET = st.sampled_from(
    list("ab@.-_+ ;,\"'\n\r\t\x00=") + ["\ufeff", "ü", "😀", "\u202e", "ex", "ample.com"]
)
cells = st.lists(CELL_ALPHABET, max_size=12).map("".join) | st.sampled_from(
    ["anna@example.com", " ANNA@Example.COM ", "keep@example.com", "=cmd()", "", "x" * 300]
)
headers = st.lists(
    st.sampled_from(["email", "first_name", "city", "note", "E-Mail", "Vorname", "DOI", "status"])
    | cells,
    min_size=1,
    max_size=5,
)


@st.composite
def csv_files(draw: st.DrawFn, delimiter: str) -> bytes:
    header = draw(headers)
    rows = draw(st.lists(st.lists(cells, max_size=6), max_size=8))
    out = io.StringIO()
    writer = csv.writer(
        out, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))
    )
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # truncated anywhere
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=8)) + data[position:]  # raw bytes
    return data


@FUZZ
@given(data=csv_files(";"))
def test_fuzzed_csv_import_plain_columns(stage: Stage, data: bytes) -> None:
    check_import_outcome(stage, data, stage.import_bytes("plain-import", data))


@FUZZ
@given(data=csv_files(","))
def test_fuzzed_csv_import_mapped_columns(stage: Stage, data: bytes) -> None:
    check_import_outcome(stage, data, stage.import_bytes("mapped-import", data))


SUPPRESSION_HEADERS = {
    "block-import": ["pattern", "reason"],
    "unsub-import": ["email", "list", "date", "reason"],
    "bounce-import": ["email", "type", "date"],
}
SUPPRESSION_CELLS = cells | st.sampled_from(
    ["hard", "soft", "HARD", "newsletter", "2026-11-01", "2026-13-45", "*@x.de", "\\*", "*", "?"]
)


@st.composite
def suppression_files(draw: st.DrawFn, job: str) -> bytes:
    header = list(SUPPRESSION_HEADERS[job])
    if draw(st.booleans()):
        header = draw(st.permutations(header))[: draw(st.integers(1, len(header)))]
    rows = draw(st.lists(st.lists(SUPPRESSION_CELLS, max_size=5), max_size=8))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@pytest.mark.parametrize("job", sorted(SUPPRESSION_HEADERS))
def test_fuzzed_suppression_imports(stage: Stage, job: str) -> None:
    @settings(FUZZ, max_examples=max(CSV_EXAMPLES // 3, 10))
    @given(data=suppression_files(job))
    def run(data: bytes) -> None:
        check_import_outcome(stage, data, stage.import_bytes(job, data))

    run()


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzzed_raw_bytes_import(stage: Stage, data: bytes) -> None:
    check_import_outcome(stage, data, stage.import_bytes("plain-import", b"email;note\n" + data))


# --------------------------------------------------------------------------- config fuzzing

KEYS = [
    "store", "work_dir", "timezone", "servers", "jobs", "smtp", "notify", "bounces", "log_file",
    "type", "host", "port", "user", "path", "list", "schedule", "source", "target", "format",
    "columns", "mode", "max_rejects", "max_removals", "fields", "include", "mailings", "server",
    "missing", "after", "archive_dir", "delimiter", "encoding", "protocol", "retries", "timeout",
    "key_file", "known_hosts", "host_key", "to", "webhook", "hard_limit", "soft_limit", "x",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        [
            "recipient-import",
            "recipient-export",
            "doi-dispatch",
            "blocklist-import",
            "ssh",
            "local",
            "daily 02:30",
            "hourly :99",
            "monthly 31 01:00",
            "weekly xyz 06:00",
            "${UNSET_VAR}",
            "${HOME:-/x}",
            "10%",
            "-5%",
            "1e309",
            "~/nope",
            "",
            "\x00",
            "Europe/Berlin",
            "Mars/Olympus",
            "/",
            "../../etc/passwd",
            "upsert",
            "replace",
        ]
    )  # fmt: skip
    | st.text(max_size=12)
)
yaml_values = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=25,
)
config_docs = st.dictionaries(st.sampled_from(KEYS), yaml_values, max_size=8)


def check_config_outcome(path: Path) -> None:
    try:
        config_module.load(str(path), env={"HOME": "/root"})
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message, message  # names the file
        assert "Traceback" not in message
    found = config_module.problems(str(path))
    assert all(isinstance(problem, str) and problem for problem in found)


@settings(FUZZ, max_examples=CONFIG_EXAMPLES)
@given(doc=config_docs)
def test_fuzzed_config_structure(tmp_path_factory: pytest.TempPathFactory, doc: dict) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-config.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    check_config_outcome(path)


@settings(FUZZ, max_examples=CONFIG_EXAMPLES)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_fuzzed_config_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-config-text.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    check_config_outcome(path)


# --------------------------------------------------------------------------- crafted files


def _fresh(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "campaign-sync.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def _import_file(config: Path, job: str, path: Path) -> Any:
    done = run_cli(config, "--json", "import", job, "--file", str(path))
    assert_no_traceback(done)
    return done


def test_formula_cells_are_neutralised_on_export(tmp_path: Path) -> None:
    config = _fresh(tmp_path)
    formulas = ['=HYPERLINK("http://x")', "+49 30 1234", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    source = tmp_path / "formulas.csv"
    with open(source, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["email", "first_name", "city", "note"])
        for index, cell in enumerate(formulas):
            writer.writerow([f"f{index}@example.com", cell, cell, "plain"])
    done = _import_file(config, "plain-import", source)
    assert done.returncode == EXIT_OK, done.stderr
    assert json_out(done)["counts"]["inserted"] == len(formulas)

    done = run_cli(config, "--json", "export", "list-export")
    assert done.returncode == EXIT_OK, done.stderr
    with open(tmp_path / "inbox" / "export" / "list.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    by_email = {row[0]: row for row in rows[1:]}
    for index, cell in enumerate(formulas):
        row = by_email[f"f{index}@example.com"]
        # The value survives (so nothing is lost), behind a quote a spreadsheet shows as text.
        stored = cell.strip()  # imports trim cells
        assert row[1] == ("'" + stored if stored[:1] in "=+-@\t\r" else stored), row
        assert not row[1].startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_nul_bytes_fail_or_reject_clearly(tmp_path: Path) -> None:
    config = _fresh(tmp_path)
    source = tmp_path / "nul.csv"
    source.write_bytes(b"email;note\nanna@example.com;ok\nbe\x00n@example.com;x\x00y\n")
    done = _import_file(config, "plain-import", source)
    result = json_out(done)
    if done.returncode == EXIT_FAILED:
        assert "line 3" in result["error"], result["error"]
    else:
        assert done.returncode == EXIT_OK, done.stderr
        assert result["counts"]["rejected"] >= 1  # the address with a NUL is no address
    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        stored = conn.execute("SELECT email || fields FROM recipients").fetchall()
    finally:
        conn.close()
    assert not any("\x00" in email for (email,) in stored if "ben" in email)


def test_mixed_encodings_fail_naming_the_line(tmp_path: Path) -> None:
    config = _fresh(tmp_path)
    source = tmp_path / "mixed.csv"
    lines = ["email;first_name"] + [f"r{i}@example.com;Jörg" for i in range(50)]
    data = "\n".join(lines).encode("utf-8") + "\nlatin@example.com;Jörg\n".encode("latin-1")
    source.write_bytes(data)
    done = _import_file(config, "plain-import", source)
    assert done.returncode == EXIT_FAILED, done.stderr
    error = json_out(done)["error"]
    assert "line 52" in error and "decode" in error, error
    assert not (tmp_path / "store.db").exists() or _count(tmp_path / "store.db") == 0


def test_utf16_file_read_as_utf8_fails_clearly(tmp_path: Path) -> None:
    config = _fresh(tmp_path)
    source = tmp_path / "utf16.csv"
    source.write_bytes("email;first_name\nanna@example.com;Anna\n".encode("utf-16"))
    done = _import_file(config, "plain-import", source)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert "line 1" in json_out(done)["error"], json_out(done)["error"]


def test_error_quoting_file_content_escapes_control_characters(tmp_path: Path) -> None:
    config = _fresh(tmp_path)
    source = tmp_path / "header.csv"
    source.write_bytes(b'"name\nFAKE: line\r\x1b[31mred";x\na;b\n')
    done = _import_file(config, "plain-import", source)
    assert done.returncode == EXIT_FAILED, done.stderr
    error = json_out(done)["error"]
    assert not any(char in error for char in "\n\r\x1b"), repr(error)
    assert "\x1b" not in done.stderr and "FAKE: line" not in done.stderr.splitlines()[-1:][0][:10]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    config = _fresh(tmp_path)
    source = tmp_path / "bom.csv"
    source.write_bytes(b"\xef\xbb\xbfemail;first_name\nanna@example.com;Anna\n")
    done = _import_file(config, "plain-import", source)
    assert done.returncode == EXIT_OK, done.stderr
    assert json_out(done)["counts"]["inserted"] == 1


def _count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM recipients").fetchone()[0])
    finally:
        conn.close()


GIB = 1 << 30
RSS_LIMIT_KIB = 400 * 1024  # the child may not hold the line: 400 MiB is far below 1 GiB


def test_one_gigabyte_single_line_fails_clearly_in_bounded_memory(tmp_path: Path) -> None:
    """A 1 GiB file that is one line after the header: written in 8 MiB blocks (the test never
    holds it), imported by a child whose peak RSS is measured with wait4."""
    config = _fresh(tmp_path)
    source = tmp_path / "one-line.csv"
    block = b"a" * (8 << 20)
    with open(source, "wb") as out:
        out.write(b"email;note\n")
        for _ in range(GIB // len(block)):
            out.write(block)
    try:
        code, peak_kib, out, err = peak_rss_run(
            cli_argv(
                "--config", str(config), "--json", "import", "plain-import", "--file", str(source)
            ),
            child_env(),
            timeout=240,
            workdir=tmp_path,
        )
    finally:
        source.unlink()
    assert "Traceback" not in err, err[-3000:]
    assert code == EXIT_FAILED, err
    error = json.loads(out)["error"]
    assert "line 2" in error, error
    print(f"1 GiB line: peak RSS of the child {peak_kib / 1024:.0f} MiB; error: {error}")
    assert peak_kib < RSS_LIMIT_KIB, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert not (tmp_path / "store.db").exists() or _count(tmp_path / "store.db") == 0


# --------------------------------------------------------------------------- hostile names


HOSTILE_NAMES = [
    "with space.csv",
    'quote\'s "double".csv',
    "semi;colon && touch PWNED.csv",
    "$(touch PWNED)`touch PWNED2`.csv",
    "-leading-dash.csv",
    "star*?[ab].csv",
    "ümlaut ✓.csv",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_source_names_on_a_local_server(tmp_path: Path, name: str) -> None:
    """Names a partner chose are data, never shell or globs: the named file, and only it."""
    (tmp_path / "inbox" / "in").mkdir(parents=True)
    (tmp_path / "inbox" / "in" / name).write_text("email\nanna@example.com\n", encoding="utf-8")
    (tmp_path / "inbox" / "in" / "stara.csv").write_text("email\nwrong@example.com\n")
    config = tmp_path / "campaign-sync.yaml"
    # A *, ? or [ in a source's file name makes it a pattern; the name itself is written
    # with them escaped ([*], [?], [[]), and names that file only, not `stara.csv`.
    path = "/in/" + glob.escape(name)
    config.write_text(
        CONFIG
        + "  hostile-import:\n    type: recipient-import\n    list: newsletter\n"
        + f"    source: {{server: inbox, path: {json.dumps(path)}}}\n",
        encoding="utf-8",
    )
    done = run_cli(config, "--json", "import", "hostile-import")
    assert_no_traceback(done)
    assert done.returncode == EXIT_OK, done.stderr
    assert json_out(done)["counts"]["inserted"] == 1
    assert _emails(tmp_path / "store.db") == ["anna@example.com"]
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


def _emails(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [email for (email,) in conn.execute("SELECT email FROM recipients ORDER BY 1")]
    finally:
        conn.close()


def test_python_executable_is_the_one_running_the_suite() -> None:
    # The children must run the interpreter that has the test dependencies.
    assert cli_argv()[0] == sys.executable


# --------------------------------------------------------------------------- atheris

ATHERIS_RUNS = int(os.environ.get("RELIABILITY_ATHERIS_RUNS", "2000"))

# Coverage-guided fuzzing of the import path (read_csv, row checks, merge) with libFuzzer.
# Each input is imported into a fresh in-memory store; any exception escaping run_job is a
# crash (expected problems come back as a failed RunResult, never as an exception).
ATHERIS_HARNESS = """
import sys, tempfile, pathlib
sys.path.insert(0, {shim!r})
import atheris
with atheris.instrument_imports():
    from campaign_sync import config as config_module, imports
    from campaign_sync.csvio import read as csvread
    from campaign_sync.ops.runner import RunOptions, run_job
root = pathlib.Path(tempfile.mkdtemp())
(root / "c.yaml").write_text(
    "store: ':memory:'\\nwork_dir: var\\njobs:\\n  fuzz-import:\\n    type: recipient-import\\n"
    "    list: newsletter\\n    format: {{delimiter: ';'}}\\n    max_rejects: 100%\\n")
config = config_module.load(str(root / "c.yaml"), env={{}})
path = root / "input.csv"

def one_input(data):
    path.write_bytes(data)
    result = run_job(config, "fuzz-import", "import", RunOptions(file=path, force=True))
    if result.status not in ("succeeded", "failed") or (result.error or "").startswith("internal"):
        raise AssertionError(f"{{result.status}}: {{result.error}}")

atheris.Setup(sys.argv, one_input)
atheris.Fuzz()
"""


def test_atheris_coverage_guided_csv_import(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    import subprocess

    from faults import shim_dir

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed1").write_bytes(SEED_CSV.encode())
    (corpus / "seed2").write_bytes(b'email;note\n"a@b.de";"x\n;y"\nbad;\xff\n')
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ATHERIS_HARNESS.format(shim=str(shim_dir())),
            f"-runs={ATHERIS_RUNS}",
            "-seed=20261127",
            "-max_total_time=60",
            "-max_len=2048",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=child_env(),
    )
    tail = done.stderr[-4000:]
    assert done.returncode == 0, tail
    assert "Done" in tail, tail
    print("atheris:", [line for line in tail.splitlines() if line.startswith("Done")][-1:])


# --------------------------------------------------------------------------- a lying server

FAKE_SCP_SOURCE = """#!/bin/sh
# Answers any command like `scp -f PATH` with one file under a name of its own choosing.
one_byte() {{ dd bs=1 count=1 2>/dev/null >/dev/null; }}
one_byte
printf 'C0644 %d %s\\n' {size} {name}
one_byte
cat {data}
printf '\\000'
one_byte
"""

LYING_NAMES = ["../../../../tmp/{tag}-evil.csv", "/tmp/{tag}-abs.csv", "{tag}\\n-nl.csv"]


@pytest.mark.parametrize("pattern", LYING_NAMES)
def test_names_an_scp_server_sends_back_never_choose_a_local_path(
    tmp_path: Path, pattern: str
) -> None:
    import shlex
    import uuid

    import sshd as sshd_helper
    from sshd import Sshd

    if not sshd_helper.available():
        pytest.skip("OpenSSH sshd not installed")
    tag = f"campaign-sync-{uuid.uuid4().hex[:8]}"
    name = pattern.format(tag=tag).replace("\\n", "\n")
    data = tmp_path / "served.csv"
    data.write_bytes(b"email\nserved@example.com\n")
    script = tmp_path / "fake-scp"
    script.write_text(
        FAKE_SCP_SOURCE.format(
            size=data.stat().st_size, name=shlex.quote(name), data=shlex.quote(str(data))
        )
    )
    script.chmod(0o755)
    with Sshd(tmp_path / "sshd", extra=f"ForceCommand {script}") as server:
        config = tmp_path / "campaign-sync.yaml"
        config.write_text(
            "store: store.db\nwork_dir: var\nservers:\n  liar:\n    type: ssh\n"
            f"    host: {server.host}\n    port: {server.port}\n    user: {server.user}\n"
            f"    key_file: {server.user_key}\n    known_hosts: {server.known_hosts}\n"
            "    protocol: scp\n    retries: 0\n    timeout: 5\n"
            "jobs:\n  liar-import:\n    type: recipient-import\n    list: newsletter\n"
            "    source: {server: liar, path: /incoming/list.csv, after: keep}\n",
            encoding="utf-8",
        )
        done = run_cli(config, "--json", "import", "liar-import")
    assert_no_traceback(done)
    assert done.returncode == EXIT_OK, done.stderr
    assert _emails(tmp_path / "store.db") == ["served@example.com"]  # the content, under our name
    planted = [p for p in Path("/tmp").glob(f"{tag}*")] + list(tmp_path.rglob(f"*{tag}*"))
    assert planted == [], planted


# --------------------------------------------------------------------------- secret types


@pytest.mark.parametrize(
    "value", ["[ListSecret77]", "{nested: S3cretNested}", "0123", "0x1F"], ids=str
)
def test_a_secret_of_the_wrong_yaml_type_is_a_configuration_error(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "campaign-sync.yaml"
    path.write_text(
        "store: store.db\nsmtp:\n  host: localhost\n  from: a@example.com\n"
        f"  password: {value}\njobs: {{}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        config_module.load(str(path), env={})
    assert "smtp.password" in str(caught.value)
    assert "S3cret" not in str(caught.value) and "ListSecret" not in str(caught.value)


# --------------------------------------------------------------------------- planted links

# Whoever can write a local server's folder can plant links there. Nothing campaign-sync
# reads, writes, moves or deletes may resolve outside that folder, and nothing it creates
# there or in work_dir may be opened through a name someone else put there.

LINKED_JOBS = """\
  linked-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /import/in.csv, after: archive, archive_dir: /done}
  in-place-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: /export/list.csv, atomic: false}
    fields: [email, first_name, city, note]
"""
SECRET_LINE = "root:*:20228:0:99999:7:::"  # what a link to /etc/shadow would show
LINK_REFUSED = (
    "is a symbolic link, and links are never followed on a local server (they could lead "
    "out of its folder); put the real file or folder there"
)


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A local server `inbox` with a store holding keep@example.com, and `outside/victim`,
    a file of someone else's outside the server's folder."""
    config = _fresh(tmp_path)
    config.write_text(CONFIG + LINKED_JOBS, encoding="utf-8")
    seed = tmp_path / "seed.csv"
    seed.write_text("email;first_name\nkeep@example.com;Keep\n", encoding="utf-8")
    assert _import_file(config, "plain-import", seed).returncode == EXIT_OK
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text(SECRET_LINE + "\n")
    return tmp_path


def _drop_and_import(root: Path) -> subprocess.CompletedProcess[str]:
    """A partner's plain file at /import/in.csv, imported by `linked-import`."""
    (root / "inbox" / "import").mkdir()
    (root / "inbox" / "import" / "in.csv").write_text("email\nanna@example.com\n")
    done = run_cli(root / "campaign-sync.yaml", "--json", "import", "linked-import")
    assert_no_traceback(done)
    return done


def _outside_untouched(root: Path) -> None:
    assert sorted(p.name for p in (root / "outside").iterdir()) == ["victim"]
    assert (root / "outside" / "victim").read_text() == SECRET_LINE + "\n"


@pytest.mark.parametrize("job", ["list-export", "in-place-export"])
def test_an_export_never_writes_through_a_planted_link(linked: Path, job: str) -> None:
    """The old fixed temporary name, and the final name itself, as links to a victim."""
    export = linked / "inbox" / "export"
    export.mkdir()
    (export / ".campaign-sync-list.csv.part").symlink_to(linked / "outside" / "victim")
    (export / "list.csv").symlink_to(linked / "outside" / "victim")
    (export / ".campaign-sync-list.csv.0123456789abcdef.part").write_text("a killed upload")
    (export / ".campaign-sync-list.csv.gz.0123456789abcdef.part").write_text("another target")
    done = run_cli(linked / "campaign-sync.yaml", "--json", "export", job)
    assert_no_traceback(done)
    assert done.returncode == EXIT_OK, done.stderr
    _outside_untouched(linked)
    # The link at the final name is replaced as a link; the temporary names of this target
    # (killed uploads, or links planted under them) are removed, never followed.
    target = export / "list.csv"
    assert not target.is_symlink()
    assert target.read_bytes() == b"email,first_name,city,note\r\nkeep@example.com,Keep,,\r\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # the partner reads it
    assert sorted(p.name for p in export.iterdir()) == [
        ".campaign-sync-list.csv.gz.0123456789abcdef.part",
        "list.csv",
    ]


@pytest.mark.parametrize(
    ("plant", "where"),
    [
        ("import/in.csv", "it"),  # the file itself is a link
        ("import", "/import"),  # a folder on the way is a link
    ],
)
def test_an_import_never_reads_through_a_planted_link(linked: Path, plant: str, where: str) -> None:
    (linked / "outside" / "in.csv").write_text("email\nother-partner@example.com\n")
    target = linked / "outside" / ("in.csv" if plant.endswith(".csv") else "")
    link = linked / "inbox" / plant
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    before = sorted((linked / "outside").iterdir())
    done = run_cli(linked / "campaign-sync.yaml", "--json", "import", "linked-import")
    assert_no_traceback(done)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert json_out(done)["error"] == (
        f"cannot read /import/in.csv on server 'inbox': {where} {LINK_REFUSED}"
    )
    assert _emails(linked / "store.db") == ["keep@example.com"]
    assert sorted((linked / "outside").iterdir()) == before  # nothing archived out there
    assert not (linked / "inbox" / "done").exists()
    assert not list((linked / "var" / "staging").rglob("*.part*"))


def test_a_link_to_a_system_file_never_shows_its_content(linked: Path) -> None:
    (linked / "inbox" / "import").mkdir()
    (linked / "inbox" / "import" / "in.csv").symlink_to(linked / "outside" / "victim")
    done = run_cli(linked / "campaign-sync.yaml", "--json", "import", "linked-import")
    assert done.returncode == EXIT_FAILED, done.stderr
    assert (
        json_out(done)["error"]
        == f"cannot read /import/in.csv on server 'inbox': it {LINK_REFUSED}"
    )
    history = run_cli(linked / "campaign-sync.yaml", "check")
    for output in (done.stdout, done.stderr, history.stdout, history.stderr):
        assert "root:" not in output
    _outside_untouched(linked)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: path.mkdir(), "it is a directory, not a file"),
        (os.mkfifo, "it is not a regular file"),  # a FIFO must not hang the run either
    ],
    ids=["directory", "fifo"],
)
def test_an_import_source_that_is_no_regular_file_is_refused(
    linked: Path, make: Any, problem: str
) -> None:
    (linked / "inbox" / "import").mkdir()
    make(linked / "inbox" / "import" / "in.csv")
    done = run_cli(linked / "campaign-sync.yaml", "--json", "import", "linked-import", timeout=30)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert json_out(done)["error"] == f"cannot read /import/in.csv on server 'inbox': {problem}"


def test_archiving_never_moves_a_file_through_a_linked_folder(linked: Path) -> None:
    (linked / "inbox" / "done").symlink_to(linked / "outside")
    done = _drop_and_import(linked)
    assert done.returncode == EXIT_OK, done.stderr  # the import stands; archiving is a warning
    assert json_out(done)["warnings"] == [
        "after: archive of /import/in.csv failed: cannot archive /import/in.csv on server "
        f"'inbox': /done {LINK_REFUSED}"
    ]
    assert (linked / "inbox" / "import" / "in.csv").exists()
    _outside_untouched(linked)


@pytest.mark.parametrize("operation", ["size", "fetch", "put", "delete", "archive", "archive to"])
def test_every_local_operation_refuses_a_linked_folder(tmp_path: Path, operation: str) -> None:
    """The same refusal for each thing a job can do on a local server, in any folder depth."""
    from campaign_sync.config.model import ServerConfig
    from campaign_sync.errors import TransferError
    from campaign_sync.transfer.local import LocalTransfer

    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "f.csv").write_text("theirs")
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(outside)
    (root / "f.csv").write_text("ours")
    staged = tmp_path / "staged"
    staged.write_text("new")
    transfer = LocalTransfer(ServerConfig(name="inbox", type="local", path=str(root)))
    calls = {
        "size": lambda: transfer.size("/a/b/deep/f.csv"),
        "fetch": lambda: transfer.fetch("/a/b/deep/f.csv", staged),
        "put": lambda: transfer.put(staged, "/a/b/deep/f.csv"),
        "delete": lambda: transfer.delete("/a/b/deep/f.csv"),
        "archive": lambda: transfer.archive("/a/b/deep/f.csv", "/done"),
        "archive to": lambda: transfer.archive("/f.csv", "/a/b/deep"),
    }
    with pytest.raises(TransferError) as caught:
        calls[operation]()
    verb = {"size": "read", "put": "upload", "archive to": "archive"}.get(operation, operation)
    path = "/f.csv" if operation == "archive to" else "/a/b/deep/f.csv"
    assert str(caught.value) == f"cannot {verb} {path} on server 'inbox': /a/b {LINK_REFUSED}"
    assert (outside / "deep" / "f.csv").read_text() == "theirs"
    assert sorted(p.name for p in outside.rglob("*")) == ["deep", "f.csv"]
    assert (root / "f.csv").read_text() == "ours"


# A path template is the operator's, but the names it renders land in the partner's folder:
# `{date:...}` takes any strftime text, `..` included, and the rendered path must still stay
# below the server's folder (`..` stops at its root) for a source, an archive folder and a
# target alike, whichever way the upload writes.
ESCAPING_TEMPLATES = """\
  template-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: "/import/{date:../..}/outside/in.csv"}
  template-archive:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /import/in.csv, after: archive, archive_dir: "/{date:..}/outside"}
  template-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: "/export/{date:../..}/outside/victim"}
    fields: [email]
  template-in-place-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: "/{date:..}/outside/victim", atomic: false}
    fields: [email]
"""


def test_a_path_template_never_leads_out_of_a_local_server(linked: Path) -> None:
    config = linked / "campaign-sync.yaml"
    config.write_text(config.read_text() + ESCAPING_TEMPLATES, encoding="utf-8")
    outside = linked / "outside"
    (outside / "in.csv").write_text("email\nother-partner@example.com\n")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    (linked / "inbox" / "import").mkdir()  # so that /import/.. is a real step up

    done = run_cli(config, "--json", "import", "template-import")
    assert_no_traceback(done)
    assert (done.returncode, json_out(done)["error"]) == (
        3,
        "no file /import/../../outside/in.csv on server 'inbox'",
    )
    (linked / "inbox" / "import" / "in.csv").write_text("email\nanna@example.com\n")
    done = run_cli(config, "--json", "import", "template-archive")
    assert (done.returncode, json_out(done)["warnings"]) == (EXIT_OK, []), done.stderr
    for job in ("template-export", "template-in-place-export"):
        done = run_cli(config, "--json", "export", job)
        assert done.returncode == EXIT_OK, done.stderr

    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert _emails(linked / "store.db") == ["anna@example.com", "keep@example.com"]
    # Everything landed below the server's folder, in a folder named as the template says.
    inside = linked / "inbox" / "outside"
    assert sorted(p.name for p in inside.iterdir()) == ["in.csv", "victim"]
    assert (inside / "victim").read_bytes() == (
        b"email\r\nanna@example.com\r\nkeep@example.com\r\n"
    )


# --------------------------------------------------------------------------- work_dir


def test_a_link_planted_in_work_dir_is_refused_and_never_followed(linked: Path) -> None:
    """A staging folder replaced by a link: the run refuses it, and the files of the folder
    it points to are not taken for a killed run's leftovers and removed."""
    (linked / "outside" / "linked-import").mkdir()
    (linked / "outside" / "linked-import" / "keep.txt").write_text("keep")
    shutil.rmtree(linked / "var" / "staging", ignore_errors=True)
    (linked / "var" / "staging").symlink_to(linked / "outside")
    done = _drop_and_import(linked)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert json_out(done)["error"] == (
        f"work_dir: {linked}/var/staging is a symbolic link; campaign-sync keeps private files "
        "only in folders of its own: remove it (it is recreated) or set `work_dir` to another "
        "folder"
    )
    assert (linked / "outside" / "linked-import" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in (linked / "outside").rglob("*")) == [
        "keep.txt",
        "linked-import",
        "victim",
    ]
    assert _emails(linked / "store.db") == ["keep@example.com"]


def test_a_work_dir_other_users_can_write_is_refused(linked: Path) -> None:
    (linked / "var").chmod(0o777)
    done = _drop_and_import(linked)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert json_out(done)["error"] == (
        f"work_dir: {linked}/var can be written by other users, who could swap the private "
        "files kept there; make it private (chmod 700) or set `work_dir` to another folder"
    )
    assert _emails(linked / "store.db") == ["keep@example.com"]
    (linked / "var").chmod(0o1777)  # sticky, like /tmp: nobody can rename our folders
    done = run_cli(linked / "campaign-sync.yaml", "--json", "import", "linked-import")
    assert done.returncode == EXIT_OK, done.stderr


def test_archiving_onto_another_file_system_copies_exclusively(tmp_path: Path) -> None:
    """An archive folder that is a mount point: rename cannot cross it, a new file is made."""
    from campaign_sync.config.model import ServerConfig
    from campaign_sync.transfer.local import LocalTransfer

    root = tmp_path / "root"
    (root / "done").mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("a second file system needs a tmpfs mount, which needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root / "done")],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        (root / "done" / "in.csv").symlink_to(tmp_path / "victim")
        (root / "in.csv").write_text("email\n")
        (root / "in.csv").chmod(0o640)
        transfer = LocalTransfer(ServerConfig(name="inbox", type="local", path=str(root)))
        moved = transfer.archive("/in.csv", "/done")
        assert moved.startswith("/done/in.") and moved != "/done/in.csv"
        archived = root / moved.lstrip("/")
        assert archived.read_text() == "email\n" and not archived.is_symlink()
        assert stat.S_IMODE(archived.stat().st_mode) == 0o640
        assert not (root / "in.csv").exists() and not (tmp_path / "victim").exists()
    finally:
        subprocess.run(["umount", "-l", str(root / "done")], check=False)
