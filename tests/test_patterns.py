"""Name patterns in an import's source path (`/in/news_*.csv`): every new matching file, oldest
first, each in its own run, over a local server and a real OpenSSH sshd (scp and sftp), on
both stores."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from sshd import Sshd

from campaign_sync.core.name_patterns import NamePattern, name_pattern
from campaign_sync.errors import SourceMissing, TransferError
from campaign_sync.transfer.ssh.listing import parse_listing

pytestmark = pytest.mark.stores("sqlite", "postgres")

SERVERS = ["local", "scp", "sftp"]
DAY = 86400
BASE_TIME = 1_780_000_000  # a fixed modification time; files are spaced a day apart


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


class Partner:
    """The folder files are delivered to, and the config that reads it through `kind`."""

    def __init__(self, ws: Workspace, kind: str, sshd: Sshd | None):
        self.ws, self.kind = ws, kind
        if kind == "local":
            self.root = ws.inbox
            self.prefix = ""  # paths in the config are below the local server's folder
            self.server = "  partner: {type: local, path: inbox}\n"
        else:
            assert sshd is not None
            self.root = ws.root / "remote"
            self.prefix = str(self.root)
            self.server = (
                "  partner:\n    type: ssh\n"
                f"    host: {sshd.host}\n    port: {sshd.port}\n    user: {sshd.user}\n"
                f"    key_file: {sshd.user_key}\n    known_hosts: {sshd.known_hosts}\n"
                f"    protocol: {kind}\n    timeout: 10\n    retries: 0\n"
            )
        (self.root / "in").mkdir(parents=True, exist_ok=True)

    def configure(self, pattern: str = "news_*.csv", **source: Any) -> None:
        keys = {"server": "partner", "path": f"{self.prefix}/in/{pattern}", **source}
        if keys.get("after") == "archive":
            keys["archive_dir"] = f"{self.prefix}/done"
        text = textwrap.dedent(
            """\
            store: store.db
            work_dir: var
            timezone: Europe/Berlin
            servers:
            {server}jobs:
              news:
                type: recipient-import
                list: newsletter
                source: {source}
            """
        ).format(server=self.server, source=json.dumps(keys))
        self.ws.write_config(text=text)

    def deliver(self, name: str, emails: list[str], *, day: int, text: str | None = None) -> Path:
        path = self.root / "in" / name
        path.write_text(text if text is not None else "email\n" + "\n".join(emails) + "\n")
        os.utime(path, (BASE_TIME + day * DAY, BASE_TIME + day * DAY))
        return path

    def remote(self, name: str) -> str:
        return f"{self.prefix}/in/{name}"


@pytest.fixture(params=SERVERS)
def partner(request: pytest.FixtureRequest, ws: Workspace) -> Partner:
    sshd = request.getfixturevalue("sshd") if request.param != "local" else None
    return Partner(ws, request.param, sshd)


def runs_of(done: Any) -> list[dict[str, Any]]:
    """The run documents of `import --json`: one object for one run, a list for several."""
    document = json.loads(done.stdout)
    return document if isinstance(document, list) else [document]


def imported(ws: Workspace) -> list[str]:
    return sorted(ws.recipients())


# --------------------------------------------------------------------------- several files


def test_three_files_oldest_first_each_its_own_run_then_archived(
    ws: Workspace, partner: Partner
) -> None:
    partner.configure(after="archive")
    # Names in the opposite order of their times: the times decide.
    partner.deliver("news_c.csv", ["anna@example.com"], day=1)
    partner.deliver("news_b.csv", ["ben@example.com"], day=2)
    partner.deliver("news_a.csv", ["carl@example.com"], day=3)
    partner.deliver(".news_hidden.csv", ["hidden@example.com"], day=0)  # an upload under way
    partner.deliver("other_x.csv", ["other@example.com"], day=0)

    done = partner.ws.run("--json", "import", "news")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert isinstance(runs, list)
    assert [run["file"]["path"] for run in runs] == [
        partner.remote(name) for name in ("news_c.csv", "news_b.csv", "news_a.csv")
    ]
    assert [run["status"] for run in runs] == ["succeeded"] * 3
    assert [run["counts"]["inserted"] for run in runs] == [1, 1, 1]
    ids = [run["run_id"] for run in runs]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert ws.query("SELECT id, status, file_path FROM runs ORDER BY id") == [
        (run["run_id"], "succeeded", run["file"]["path"]) for run in runs
    ]
    assert imported(ws) == ["anna@example.com", "ben@example.com", "carl@example.com"]
    # Each archived after its own commit; the hidden and the other file stay.
    assert sorted(p.name for p in (partner.root / "done").iterdir()) == [
        "news_a.csv",
        "news_b.csv",
        "news_c.csv",
    ]
    assert sorted(p.name for p in (partner.root / "in").iterdir()) == [
        ".news_hidden.csv",
        "other_x.csv",
    ]


def test_a_second_run_imports_nothing_new_and_a_later_file_alone(
    ws: Workspace, partner: Partner
) -> None:
    partner.configure()  # after: keep, so the second run sees the same files again
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    partner.deliver("news_2.csv", ["ben@example.com"], day=2)
    first = partner.ws.run("--json", "import", "news")
    assert first.returncode == 0, first.stderr
    assert len(runs_of(first)) == 2

    again = partner.ws.run("--json", "import", "news")
    assert again.returncode == 0, again.stderr
    run = json.loads(again.stdout)
    assert isinstance(run, dict)  # one run: one object
    assert run["status"] == "skipped"
    assert run["file"] is None
    ids = sorted(r["run_id"] for r in runs_of(first))
    assert run["message"] == (
        f"no new file: every file matching {partner.remote('news_*.csv')} was already "
        f"imported (by run {ids[0]}, {ids[1]}); use --force to import them again"
    )

    partner.deliver("news_3.csv", ["carl@example.com"], day=3)
    later = partner.ws.run("--json", "import", "news")
    assert later.returncode == 0, later.stderr
    run = json.loads(later.stdout)
    assert isinstance(run, dict)
    assert run["status"] == "succeeded"
    assert run["file"]["path"] == partner.remote("news_3.csv")
    assert run["counts"]["inserted"] == 1
    statuses = ws.query("SELECT status FROM runs ORDER BY id")
    assert statuses == [("succeeded",), ("succeeded",), ("skipped",), ("succeeded",)]


BAD = "first_name\nNobody\n"  # no email column: the file fails as a whole


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_a_bad_file_in_the_middle(ws: Workspace, partner: Partner, on_error: str) -> None:
    partner.configure(after="archive", on_error=on_error)
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    partner.deliver("news_2.csv", [], day=2, text=BAD)
    partner.deliver("news_3.csv", ["carl@example.com"], day=3)

    done = partner.ws.run("--json", "import", "news")
    assert done.returncode == 1, done.stderr
    runs = runs_of(done)
    assert "Traceback" not in done.stderr
    bad = runs[1]
    assert bad["status"] == "failed"
    assert bad["file"]["path"] == partner.remote("news_2.csv")
    assert (partner.root / "in" / "news_2.csv").exists()  # not archived: not imported
    if on_error == "stop":
        assert [run["status"] for run in runs] == ["succeeded", "failed"]
        assert bad["warnings"] == ["1 more file matches the pattern; left for the next run"]
        assert imported(ws) == ["anna@example.com"]
        assert (partner.root / "in" / "news_3.csv").exists()
        # It waits behind the bad file until that one is mended or taken away.
        (partner.root / "in" / "news_2.csv").unlink()
        again = partner.ws.run("--json", "import", "news")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["file"]["path"] == partner.remote("news_3.csv")
    else:
        assert [run["status"] for run in runs] == ["succeeded", "failed", "succeeded"]
        assert bad["warnings"] == []
        assert not (partner.root / "in" / "news_3.csv").exists()
    assert imported(ws) == ["anna@example.com", "carl@example.com"]
    statuses = [row[0] for row in ws.query("SELECT status FROM runs ORDER BY id")]
    assert statuses.count("failed") == 1


@pytest.mark.parametrize(("missing", "code"), [("fail", 3), ("skip", 0)])
def test_no_match_is_missing(ws: Workspace, partner: Partner, missing: str, code: int) -> None:
    partner.configure(missing=missing)
    partner.deliver("other.csv", ["anna@example.com"], day=1)
    done = partner.ws.run("--json", "import", "news")
    assert done.returncode == code, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == ("failed" if missing == "fail" else "skipped")
    expected = f"no file matches {partner.remote('news_*.csv')} on server 'partner'"
    said = run["error"] if missing == "fail" else run["message"]
    assert said == expected + ("" if missing == "fail" else " (missing: skip)")
    assert ws.query("SELECT status FROM runs") == [(run["status"],)]


def test_a_missing_folder_is_no_match(ws: Workspace, partner: Partner) -> None:
    partner.configure(pattern="nowhere/news_*.csv")
    done = partner.ws.run("--json", "import", "news")
    assert done.returncode == 3, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.startswith(f"no file matches {partner.prefix}/in/nowhere/news_*.csv on server")
    assert "no folder" in error


def test_dry_run_reports_each_file_and_records_nothing(ws: Workspace) -> None:
    partner = Partner(ws, "local", None)  # the transfer is that of a real run
    partner.configure(after="delete")
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    partner.deliver("news_2.csv", ["ben@example.com", "carl@example.com"], day=2)
    done = partner.ws.run("--json", "import", "news", "--dry-run")
    assert done.returncode == 0, done.stderr
    runs = runs_of(done)
    assert [(r["dry_run"], r["run_id"], r["counts"]["inserted"]) for r in runs] == [
        (True, None, 1),
        (True, None, 2),
    ]
    assert len(list((partner.root / "in").iterdir())) == 2  # after: delete not applied
    if ws.kind == "sqlite" and not ws.store.exists():
        return  # a dry run before any real run creates no store
    assert ws.query("SELECT count(*) FROM runs") == [(0,)]


def test_file_option_imports_that_one_file(ws: Workspace) -> None:
    partner = Partner(ws, "local", None)  # no server is asked at all
    partner.configure()
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    own = ws.root / "mended.csv"
    own.write_text("email\nzoe@example.com\n")
    done = partner.ws.run("--json", "import", "news", "--file", str(own))
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["file"]["path"] == str(own)
    assert imported(ws) == ["zoe@example.com"]


def test_text_output_shows_each_run(ws: Workspace) -> None:
    partner = Partner(ws, "local", None)
    partner.configure()
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    partner.deliver("news_2.csv", [], day=2, text=BAD)
    done = ws.run("import", "news")
    assert done.returncode == 1
    assert done.stdout.count("news: ") == 2
    assert "news: succeeded" in done.stdout and "news: failed" in done.stdout
    assert done.stderr.count("campaign-sync: error: ") == 1


# --------------------------------------------------------------------------- names and roots

HOSTILE = [
    "news with spaces.csv",
    "news;$(touch PWNED)`touch PWNED2`.csv",
    "news 'single' \"double\".csv",
    "news\nnewline.csv",
    "news&& echo x|y.csv",
    "news-ümlaut ✓.csv",
]


@pytest.mark.parametrize("kind", ["scp", "sftp"])
def test_names_with_spaces_and_shell_characters(ws: Workspace, sshd: Sshd, kind: str) -> None:
    partner = Partner(ws, kind, sshd)
    partner.configure(pattern="news*.csv", after="archive")
    for day, name in enumerate(HOSTILE):
        partner.deliver(name, [f"user{day}@example.com"], day=day)
    done = ws.run("--json", "import", "news", cwd=partner.root)
    assert done.returncode == 0, done.stderr
    runs = runs_of(done)
    assert [run["file"]["path"] for run in runs] == [partner.remote(name) for name in HOSTILE]
    assert imported(ws) == sorted(f"user{day}@example.com" for day in range(len(HOSTILE)))
    assert sorted(p.name for p in (partner.root / "done").iterdir()) == sorted(HOSTILE)
    home = Path.home()
    for where in (partner.root, partner.root / "in", home, ws.root):
        assert not (where / "PWNED").exists() and not (where / "PWNED2").exists()


def test_a_local_server_lists_no_link_and_nothing_outside(ws: Workspace) -> None:
    partner = Partner(ws, "local", None)
    partner.configure()
    outside = ws.root / "secret.csv"
    outside.write_text("email\nsecret@example.com\n")
    (partner.root / "in" / "news_link.csv").symlink_to(outside)
    (partner.root / "in" / "news_folder.csv").mkdir()
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    done = ws.run("--json", "import", "news")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["file"]["path"] == "/in/news_1.csv"
    assert imported(ws) == ["anna@example.com"]


def test_scp_without_gnu_find_says_to_use_sftp(ws: Workspace, tmp_path: Path) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "find").write_text(
        "#!/bin/sh\necho \"find: unknown predicate '-printf'\" >&2\nexit 1\n"
    )
    (fake / "find").chmod(0o755)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(
        f'#!/bin/sh\nPATH={fake}:$PATH\nexport PATH\nexec sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    wrapper.chmod(0o755)
    with Sshd(tmp_path / "sshd", extra=f"ForceCommand {wrapper}") as server:
        partner = Partner(ws, "scp", server)
        partner.configure()
        partner.deliver("news_1.csv", ["anna@example.com"], day=1)
        done = ws.run("--json", "import", "news")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.endswith(
        f"list {partner.root / 'in'}: listing a folder over scp runs GNU find on the server "
        "(find -printf), which this server does not have; set protocol: sftp"
    )
    assert ws.query("SELECT status FROM runs") == [("failed",)]


# The partner's server as a run sees it: the newest file grows between the size probe before
# its fetch and the fetch (commands: 1 the listing; 2-4 probe, fetch, probe of the older file;
# 5 the probe of the newest, 6 its fetch), as when an upload is still going on.
GROWING = """#!/bin/sh
count=$(cat {counter} 2>/dev/null || echo 0)
count=$((count + 1))
echo "$count" > {counter}
if [ "$count" = 6 ]; then printf 'late@example.com\\n' >> {source}; fi
exec sh -c "$SSH_ORIGINAL_COMMAND"
"""


def test_a_file_still_growing_is_left_for_the_next_run(ws: Workspace, tmp_path: Path) -> None:
    script = tmp_path / "growing"
    partner_root = ws.root / "remote"
    growing = partner_root / "in" / "news_2.csv"
    script.write_text(GROWING.format(counter=tmp_path / "count", source=growing))
    script.chmod(0o755)
    with Sshd(tmp_path / "sshd", extra=f"ForceCommand {script}") as server:
        partner = Partner(ws, "scp", server)
        partner.configure()
        partner.deliver("news_1.csv", ["anna@example.com"], day=1)
        partner.deliver("news_2.csv", ["ben@example.com"], day=2)
        done = ws.run("--json", "import", "news")
        assert done.returncode == 1, done.stderr
        first, second = runs_of(done)
        assert first["status"] == "succeeded"
        assert second["status"] == "failed"
        assert "it is probably still being uploaded" in second["error"]
        assert imported(ws) == ["anna@example.com"]

        again = ws.run("--json", "import", "news")
    assert again.returncode == 0, again.stderr
    run = json.loads(again.stdout)
    assert run["file"]["path"] == str(growing)
    assert imported(ws) == ["anna@example.com", "ben@example.com", "late@example.com"]


@pytest.mark.parametrize("point", ["after-action", "notice"])
def test_a_signal_stops_the_files_after_it(ws: Workspace, point: str) -> None:
    """SIGTERM (cron's `timeout`) after the first file's commit: that file stands, the others
    wait for the next run, and the run says so."""
    from faults import child_env, cli_argv

    partner = Partner(ws, "local", None)
    partner.configure(after="archive")
    for day in (1, 2, 3):
        partner.deliver(f"news_{day}.csv", [f"user{day}@example.com"], day=day)
    argv = cli_argv("--config", str(ws.config), "--json", "import", "news", signal_at=point)
    done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert isinstance(run, dict) and run["status"] == "succeeded"
    assert run["file"]["path"] == "/in/news_1.csv"
    assert run["warnings"][-1] == (
        "stopped by a signal: 2 more files match the pattern; left for the next run"
    )
    assert imported(ws) == ["user1@example.com"]
    assert ws.query("SELECT status FROM runs") == [("succeeded",)]
    assert sorted(p.name for p in (partner.root / "in").iterdir())[-2:] == [
        "news_2.csv",
        "news_3.csv",
    ]
    done = ws.run("--json", "import", "news")
    assert done.returncode == 0, done.stderr
    assert [r["file"]["path"] for r in runs_of(done)] == ["/in/news_2.csv", "/in/news_3.csv"]


def test_one_lock_for_all_files_and_one_notice_per_file(ws: Workspace) -> None:
    """While the first file's notice hangs, the job is locked (a second run exits 75); then
    each file's run sends its own notice, naming its file."""
    from webhook_server import WebhookTestServer

    partner = Partner(ws, "local", None)
    partner.configure()
    for day in (1, 2, 3):
        partner.deliver(f"news_{day}.csv", [f"user{day}@example.com"], day=day)
    with WebhookTestServer("hang") as hook:
        text = ws.config.read_text()
        ws.write_config(text=text + f"notify: {{webhook: '{hook.url}', webhook_timeout: 120}}\n")
        running = subprocess.Popen(
            ["campaign-sync", "--config", str(ws.config), "--json", "import", "news"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not hook.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hook.requests, "the first file's notice never came"
            second = ws.run("--json", "import", "news")
            assert second.returncode == 75, second.stderr
            hook.mode = "ok"
            hook._release.set()  # the hanging notice ends (unanswered: a warning)
            out, err = running.communicate(timeout=120)
        finally:
            running.kill()
    assert running.returncode == 0, err
    runs = json.loads(out)
    assert [run["status"] for run in runs] == ["succeeded"] * 3
    assert [request.json["file"]["path"] for request in hook.requests] == [
        f"/in/news_{day}.csv" for day in (1, 2, 3)
    ]
    assert ws.query("SELECT count(*) FROM runs") == [(3,)]


def test_a_pattern_in_a_folder_is_refused_by_validate(ws: Workspace) -> None:
    partner = Partner(ws, "local", None)
    partner.configure(pattern="*/news.csv")
    done = ws.run("validate")
    assert done.returncode == 2
    assert (
        "At 'jobs.news.source.path': a wildcard (*, ? or [...]) may only be in the file name, "
        "not in the folder '/in/*'" in done.stdout
    )
    done = ws.run("--json", "import", "news")
    assert done.returncode == 2
    assert "jobs.news.source.path" in json.loads(done.stdout)["error"]


# --------------------------------------------------------------------------- the pieces


def test_name_patterns() -> None:
    assert name_pattern("/in/news_20261207.csv") is None
    pattern = name_pattern("/in/news_*.csv")
    assert pattern == NamePattern("/in", "news_*.csv")
    assert pattern.matches("news_1.csv") and not pattern.matches("news_1.csv.part")
    assert not pattern.matches(".news_1.csv")  # hidden names need a pattern starting with .
    assert NamePattern("", ".n*").matches(".news")
    classes = NamePattern("", "n[0-9][!a].csv")
    assert classes.matches("n1b.csv") and not classes.matches("n1a.csv")
    assert NamePattern("", "a[*].csv").matches("a*.csv")  # a literal *, written [*]
    assert not NamePattern("", "a[*].csv").matches("ab.csv")
    assert NamePattern("", "News_*.csv").matches("News_1.csv")
    assert not NamePattern("", "News_*.csv").matches("news_1.csv")  # case matters
    with pytest.raises(ValueError, match="not in the folder '/in/2026-\\*'"):
        name_pattern("/in/2026-*/news.csv")


def test_scp_listing_parser() -> None:
    out = b"12 1780000000.5 a b.csv\x0034 1780000001.0000000000 new\nline.csv\x00"
    out += b"5 1780000002 ../evil.csv\x007 1780000003 \xff\xfe.csv\x00"
    files = parse_listing(out, "/in")
    assert [(f.name, f.size, f.mtime) for f in files] == [
        ("a b.csv", 12, 1780000000),
        ("new\nline.csv", 34, 1780000001),
    ]
    with pytest.raises(TransferError, match="ended in the middle of a name"):
        parse_listing(b"12 1780000000 cut", "/in")
    with pytest.raises(SourceMissing, match="no folder /in"):
        parse_listing(b"no-such-folder\x00", "/in")
    with pytest.raises(TransferError, match="^/in is not a folder$"):
        parse_listing(b"not-a-folder\x00", "/in")


def test_a_folder_that_is_a_file_is_named_as_one(ws: Workspace, partner: Partner) -> None:
    partner.configure(pattern="news_1.csv/news_*.csv")
    partner.deliver("news_1.csv", ["anna@example.com"], day=1)
    done = partner.ws.run("--json", "import", "news")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.endswith(f"{partner.remote('news_1.csv')} is not a folder"), error
