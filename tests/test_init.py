"""`campaign-sync init`: a starter config that validates and runs every job as it is, and never
overwrites anything."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["campaign-sync", *args], capture_output=True, text=True, cwd=folder, timeout=60
    )


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(config.parent, "--config", str(config), *args)


def test_the_starter_validates_and_runs_each_job(tmp_path: Path) -> None:
    made = cli(tmp_path, "init", "site")
    assert made.returncode == 0, made.stderr
    site = tmp_path / "site"
    config = site / "campaign-sync.yaml"
    assert made.stdout.splitlines()[:2] == [
        "site/campaign-sync.yaml",
        "site/mailings/newsletter/welcome.eml",
    ]
    assert run(config, "validate").stdout == f"{config}: OK\n"
    assert sorted(job["name"] for job in json.loads(run(config, "--json", "list-jobs").stdout)) == [
        "newsletter-export",
        "newsletter-import",
        "welcome",
    ]
    skipped = json.loads(run(config, "--json", "import", "newsletter-import").stdout)
    assert skipped["status"] == "skipped"  # no file today: not a failure
    today = datetime.date.today().strftime("%Y%m%d")
    (site / "inbox" / f"newsletter_{today}.csv").write_text(
        "email,first_name,last_name,doi_confirmed_at\n"
        "anna@example.com,Anna,Berg,\n"
        "not-an-address,Bad,Row,\n"
        "ben@example.com,Ben,Cole,\n"
    )
    imported = run(config, "--json", "import", "newsletter-import")
    assert imported.returncode == 1  # 1 of 3 rejected is above max_rejects 10 %: nothing kept
    (site / "inbox" / f"newsletter_{today}.csv").write_text(
        "email,first_name,last_name,doi_confirmed_at\n"
        "anna@example.com,Anna,Berg,\n"
        "ben@example.com,Ben,Cole,\n"
    )
    imported = run(config, "--json", "import", "newsletter-import")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["counts"]["inserted"] == 2
    assert os.listdir(site / "inbox" / "archive") == [f"newsletter_{today}.csv"]
    exported = run(config, "export", "newsletter-export")
    assert exported.returncode == 0, exported.stderr
    assert (site / "outbox" / f"newsletter_{today}.csv").read_text() == (
        "email,first_name,last_name\nanna@example.com,Anna,Berg\nben@example.com,Ben,Cole\n"
    )
    dispatched = run(config, "--json", "dispatch", "welcome")  # nobody confirmed: nobody mailed
    assert dispatched.returncode == 0, dispatched.stderr
    assert json.loads(dispatched.stdout)["status"] == "succeeded"


def test_init_never_overwrites(tmp_path: Path) -> None:
    config = tmp_path / "campaign-sync.yaml"
    config.write_text("mine\n")
    done = cli(tmp_path, "--json", "init")
    message = (
        f"{Path('.') / 'campaign-sync.yaml'} exists already; init never overwrites: choose an "
        "empty folder (campaign-sync init DIR)"
    )
    assert (done.returncode, json.loads(done.stdout)) == (2, {"error": message, "exit_code": 2})
    assert config.read_text() == "mine\n"
    assert sorted(os.listdir(tmp_path)) == ["campaign-sync.yaml"]  # nothing else made either
