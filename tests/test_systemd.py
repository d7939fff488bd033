"""`campaign-sync systemd`: the timers fire when `list-jobs` says, checked with the real
`systemd-analyze` (calendar and verify), across both daylight-saving changes of Europe/Berlin."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace

from campaign_sync.core.schedule import parse, zone

BERLIN = zone("Europe/Berlin")
UTC = datetime.timezone.utc

# Every schedule form, and each at a time that a daylight-saving change touches: 02:15-02:45 is
# skipped on the last Sunday of March and repeated on the last Sunday of October in Berlin.
FORMS = {
    "every-hour": "hourly :15",
    "every-day": "daily 02:30",
    "two-days": "weekly wed,sun 02:45",
    "on-the-28th": "monthly 28 02:30",
    "month-end": "monthly last 02:15",
    "first": "monthly 1 06:00",
}
CONFIG = (
    "store: store.db\nwork_dir: var\n{zone}servers:\n  box: {{type: local, path: box}}\njobs:\n"
)


def write_config(ws: Workspace, timezone: str | None = "Europe/Berlin") -> None:
    text = CONFIG.format(zone=f"timezone: {timezone}\n" if timezone else "")
    for name, schedule in FORMS.items():
        text += (
            f"  {name}:\n    type: blocklist-export\n    schedule: {schedule}\n"
            f"    target: {{server: box, path: /{name}.csv}}\n"
        )
    text += "  by-hand:\n    type: blocklist-export\n    target: {server: box, path: /x.csv}\n"
    ws.write_config(text=text)


def units(ws: Workspace, *args: str) -> dict[str, str]:
    done = ws.run("--json", "systemd", *args)
    assert done.returncode == 0, done.stderr
    return {unit["name"]: unit["text"] for unit in json.loads(done.stdout)["units"]}


def calendars(timer: str) -> list[str]:
    return re.findall(r"^OnCalendar=(.*)$", timer, flags=re.M)


def systemd_elapses(expressions: list[str], base: datetime.datetime, count: int) -> list[str]:
    """The first `count` times a timer with these OnCalendar= lines elapses after `base`.

    A timer elapses at the earliest of its calendar lines, so each line's own next `count`
    elapses (from `systemd-analyze calendar`) are merged.
    """
    found: set[datetime.datetime] = set()
    for expression in expressions:
        done = subprocess.run(
            [
                "systemd-analyze",
                "calendar",
                f"--iterations={count}",
                f"--base-time={base.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
                expression,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
            check=True,
        )
        for stamp in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout):
            moment = datetime.datetime.fromisoformat(stamp).replace(tzinfo=UTC)
            found.add(moment)
    return [f"{moment:%Y-%m-%d %H:%M}" for moment in sorted(found)[:count]]


def campaign_sync_runs(schedule: str, base: datetime.datetime, count: int) -> list[str]:
    """The same, from the schedule code `list-jobs` computes `next_run` with."""
    runs, moment = [], base
    for _ in range(count):
        moment = parse(schedule).next_after(moment, BERLIN)
        runs.append(f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}")
    return runs


def next_changes(now: datetime.datetime) -> list[datetime.datetime]:
    """The next spring-forward and fall-back instants of Berlin after `now` (UTC)."""
    changes, hour = [], now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    offset = hour.astimezone(BERLIN).utcoffset()
    while len(changes) < 2:
        hour += datetime.timedelta(hours=1)
        if hour.astimezone(BERLIN).utcoffset() != offset:
            offset = hour.astimezone(BERLIN).utcoffset()
            changes.append(hour)
    return changes


@pytest.mark.parametrize("name", list(FORMS))
def test_timers_fire_when_list_jobs_says_across_both_daylight_saving_changes(
    ws: Workspace, name: str
) -> None:
    write_config(ws)
    timer = units(ws)[f"campaign-sync-{name}.timer"]
    expressions = calendars(timer)
    schedule = FORMS[name]
    now = datetime.datetime.now(UTC)
    # From now (the first run must be list-jobs' next_run), and from two days before each
    # change: enough runs to pass it (hourly: two days; monthly: beyond a year).
    count = {"hourly": 60, "daily": 6, "weekly": 6, "monthly": 14}[parse(schedule).kind]
    for base in [now] + [change - datetime.timedelta(days=2) for change in next_changes(now)]:
        assert systemd_elapses(expressions, base, count) == campaign_sync_runs(
            schedule, base, count
        ), (name, base)
    listed = {job["name"]: job for job in json.loads(ws.run("--json", "list-jobs").stdout)}
    next_run = datetime.datetime.fromisoformat(listed[name]["next_run"])
    assert systemd_elapses(expressions, now, 1) == [f"{next_run.astimezone(UTC):%Y-%m-%d %H:%M}"]


def test_a_fixed_time_in_the_spring_gap_gets_the_days_it_moves_to(ws: Workspace) -> None:
    write_config(ws)
    found = units(ws)
    daily = calendars(found["campaign-sync-every-day.timer"])
    assert daily[0] == "*-*-* 02:30:00 Europe/Berlin"
    # One line per last Sunday of March for ten years: the end of the gap, 03:00.
    assert len(daily) in (11, 12)
    assert all(
        re.fullmatch(r"20\d\d-03-(2[5-9]|3[01]) 03:00:00 Europe/Berlin", d) for d in daily[1:]
    )
    assert calendars(found["campaign-sync-first.timer"]) == ["*-*-01 06:00:00 Europe/Berlin"]
    assert calendars(found["campaign-sync-every-hour.timer"]) == ["*-*-* *:15:00 UTC"]
    assert calendars(found["campaign-sync-month-end.timer"])[0] == "*-*~01 02:15:00 Europe/Berlin"
    assert "campaign-sync-by-hand.timer" not in found  # not scheduled: no units


def test_a_service_runs_the_job_as_its_crontab_line_does(ws: Workspace) -> None:
    write_config(ws)
    service = units(ws)["campaign-sync-two-days.service"]
    [exec_start] = re.findall(r"^ExecStart=(.*)$", service, flags=re.M)
    executable = shutil.which("campaign-sync")
    assert executable is not None
    assert exec_start == (f"{Path(executable).resolve()} --config {ws.config} -q export two-days")
    assert "\nType=oneshot\n" in service
    assert "\nSuccessExitStatus=75\n" in service
    assert f"\nEnvironmentFile=-{ws.root}/campaign-sync.env\n" in service
    assert "\nUMask=0077\n" in service
    owner = pwd.getpwuid(ws.config.stat().st_uid).pw_name
    assert f"\nUser={owner}\n" in service
    user_service = units(ws, "--user")["campaign-sync-two-days.service"]
    assert "User=" not in user_service and "network-online" not in user_service


@pytest.mark.parametrize("scope", ["system", "user"])
def test_systemd_analyze_verify_accepts_the_written_units(
    ws: Workspace, tmp_path: Path, scope: str
) -> None:
    write_config(ws)
    folder = tmp_path / "units"
    args = ["--output-dir", str(folder)] + (["--user"] if scope == "user" else [])
    done = ws.run("systemd", *args)
    assert done.returncode == 0, done.stderr
    written = sorted(folder.iterdir())
    assert len(written) == 2 * len(FORMS)
    lines = done.stdout.splitlines()
    assert sorted(lines[:-1]) == [str(p) for p in written]
    assert lines[-1].startswith("Enable with: systemctl ")
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in written)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(
        ["systemd-analyze", *(["--user"] if scope == "user" else []), "verify"]
        + [str(p) for p in written],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    # verify exits 0 even for a line it ignores; a warning on any line is a failure here.
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")


def test_a_unit_written_by_hand_is_never_overwritten(ws: Workspace, tmp_path: Path) -> None:
    write_config(ws)
    folder = tmp_path / "units"
    assert ws.run("systemd", "--output-dir", str(folder)).returncode == 0
    generated = folder / "campaign-sync-every-day.timer"
    generated.write_text(generated.read_text().replace("02:30", "03:30"))
    again = ws.run("systemd", "--output-dir", str(folder))  # our own file: replaced
    assert again.returncode == 0, again.stderr
    assert "02:30:00" in generated.read_text()
    mine = folder / "campaign-sync-first.service"
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    refused = ws.run("--json", "systemd", "--output-dir", str(folder))
    message = (
        f"{mine} exists and was not written by `campaign-sync systemd`: move it away or "
        "choose another --output-dir"
    )
    assert (refused.returncode, json.loads(refused.stdout)) == (
        2,
        {"error": message, "exit_code": 2},
    )
    assert refused.stderr == f"campaign-sync: error: {message}\n"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
