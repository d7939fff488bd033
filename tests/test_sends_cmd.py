"""`campaign-sync sends JOB` and `sends settle JOB ADDRESS --delivered|--not-delivered`
through the installed CLI, on both stores, after real imports and real dispatches against a
real SMTP server (the scene of test_recipient_cmd: anna's send `unknown`, ben's `sent`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest import Workspace
from smtp_server import SmtpTestServer
from test_completion import complete
from test_recipient_cmd import CONFIG, SENDER, cli, jcli, scene, send_row, shown, smtp

pytestmark = pytest.mark.stores("sqlite", "postgres")
__all__ = ["scene", "smtp"]  # fixtures used by name


def sends_of(ws: Workspace, *emails: str) -> list[dict[str, Any]]:
    """The sends as `sends --json` shows them: the store's row, with the address, no job."""
    keys = "email list mailing state attempts message_id run_id created_at updated_at detail"
    rows = [{**send_row(ws, email), "email": email} for email in emails]
    return [{key: row[key] for key in keys.split()} for row in rows]


def received(server: SmtpTestServer) -> Counter[str]:
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def test_lists_a_jobs_sends_by_state(scene: Workspace) -> None:
    ws = scene
    anna, ben = sends_of(ws, "anna@example.com", "ben@example.com")
    assert anna["state"] == "unknown" and ben["state"] == "sent"
    assert jcli(ws, "sends", "welcome") == [anna, ben]
    assert jcli(ws, "sends", "welcome", "--state", "unknown") == [anna]
    assert jcli(ws, "sends", "list", "welcome", "--state", "sent") == [ben]
    assert jcli(ws, "sends", "welcome", "--state", "failed") == []
    assert cli(ws, "sends", "welcome", "--state", "deferred") == "no deferred sends of welcome\n"
    assert cli(ws, "sends", "welcome").splitlines() == [
        "ADDRESS           STATE    ATTEMPTS  UPDATED           MAILING      MESSAGE-ID",
        f"anna@example.com  unknown  1         {shown(anna['updated_at'])}  welcome.eml  "
        f"{anna['message_id']}",
        f"ben@example.com   sent     1         {shown(ben['updated_at'])}  welcome.eml  "
        f"{ben['message_id']}",
    ]


def last_run(ws: Workspace) -> Any:
    [welcome] = [job for job in jcli(ws, "list-jobs") if job["name"] == "welcome"]
    return welcome["last_run"]


def test_delivered_keeps_it_sent_and_is_recorded_beside_the_jobs_own_runs(
    scene: Workspace, smtp: SmtpTestServer
) -> None:
    ws = scene
    before_last, before_check = last_run(ws), ws.run("check")
    settled = jcli(ws, "sends", "settle", "welcome", "Anna@Example.com", "--delivered")
    [(run_id,)] = ws.query("SELECT max(id) FROM runs")
    message = "anna@example.com: settled as delivered by an operator; it stays sent"
    assert settled == {
        "job": "welcome",
        "email": "anna@example.com",
        "settled": "delivered",
        "state": "sent",
        "run_id": run_id,
        "message": message,
    }
    [anna] = sends_of(ws, "anna@example.com")
    assert (anna["state"], anna["detail"]) == ("sent", "settled as delivered by an operator")
    [record] = jcli(ws, "history", "--limit", "1")
    assert (record["job"], record["type"], record["status"], record["message"]) == (
        "welcome:settle",
        "sends-settle",
        "succeeded",
        message,
    )
    assert record["counts"] == {"delivered": 1, "not_delivered": 0}
    # The job's own state is what its dispatches made it.
    assert last_run(ws) == before_last
    after_check = ws.run("check")
    assert (after_check.returncode, after_check.stdout) == (
        before_check.returncode,
        before_check.stdout,
    )
    mailed = received(smtp)
    assert jcli(ws, "dispatch", "welcome")["counts"]["sent"] == 0
    assert received(smtp) == mailed
    # Settled is settled: a second settlement is refused.
    refused(
        ws,
        ("settle", "welcome", "anna@example.com", "--not-delivered"),
        "the send of 'welcome' to anna@example.com is sent, not unknown; only a send of "
        "unknown outcome can be settled",
    )


def test_not_delivered_is_sent_by_the_next_dispatch(scene: Workspace, smtp: SmtpTestServer) -> None:
    ws = scene
    out = cli(ws, "sends", "settle", "welcome", "anna@example.com", "--not-delivered")
    [(run_id,)] = ws.query("SELECT max(id) FROM runs")
    assert out == (
        "welcome: anna@example.com: settled as not delivered by an operator; the next dispatch "
        f"sends it (run {run_id})\n"
    )
    assert send_row(ws, "anna@example.com")["state"] == "deferred"
    assert received(smtp) == Counter({"anna@example.com": 1, "ben@example.com": 1})
    assert jcli(ws, "dispatch", "welcome")["counts"]["sent"] == 1
    assert received(smtp) == Counter({"anna@example.com": 2, "ben@example.com": 1})
    [anna] = sends_of(ws, "anna@example.com")
    assert (anna["state"], anna["attempts"]) == ("sent", 2)


REFUSED = [
    (
        ("settle", "welcome", "ben@example.com", "--delivered"),
        "the send of 'welcome' to ben@example.com is sent, not unknown; only a send of "
        "unknown outcome can be settled",
    ),
    (
        ("settle", "welcome", "carla@example.com", "--not-delivered"),
        "job 'welcome' has no send to carla@example.com; nothing to settle",
    ),
    (
        ("settle", "welcome", "anna(at)example.com", "--delivered"),
        "'anna(at)example.com' is not an address: missing @; give one like anna@example.com",
    ),
    (
        ("settle", "rec", "anna@example.com", "--delivered"),
        "'rec' is a recipient-import job; `sends` takes a doi-dispatch job",
    ),
    (
        ("settle", "welcome", "anna@example.com"),
        "say what the relay's log shows: --delivered or --not-delivered",
    ),
    (("rec",), "'rec' is a recipient-import job; `sends` takes a doi-dispatch job"),
]


def test_what_cannot_be_settled_is_one_line_exit_2_and_changes_nothing(scene: Workspace) -> None:
    ws = scene
    before = ws.dump()
    for args, error in REFUSED:
        refused(ws, args, error)
    configured = "active-export, block, bounce, rec, unsub, welcome"
    unknown = f"{ws.config}: no job named 'welcom' (configured jobs: {configured})"
    refused(ws, ("settle", "welcom", "anna@example.com", "--delivered"), unknown)
    refused(ws, ("welcom",), unknown)
    assert ws.dump() == before


def refused(ws: Workspace, args: tuple[str, ...], error: str) -> None:
    done = ws.run("sends", *args)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"campaign-sync: error: {error}\n",
    )
    assert jcli(ws, "sends", *args, code=2) == {"error": error, "exit_code": 2}


def test_job_names_complete(ws: Workspace) -> None:
    ws.write_config(text=CONFIG.format(host="localhost", port=25, sender=SENDER))
    prefix = f"campaign-sync --config {ws.config}"
    assert complete(ws, f"{prefix} sends ") == ["welcome", "settle"]
    assert complete(ws, f"{prefix} sends w") == ["welcome"]
    assert complete(ws, f"{prefix} sends settle ") == ["welcome"]
    assert complete(ws, f"{prefix} sends list ") == ["welcome", "settle"]
    assert complete(ws, f"{prefix} sends welcome --st") == ["--state"]
