"""crontab.example is what `campaign-sync crontab` prints for config/example."""

from __future__ import annotations

import subprocess
from pathlib import Path

from campaign_sync import config
from campaign_sync.ops.crontab import crontab_lines

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example" / "campaign-sync.yaml"
# crontab.example shows a typical installation rather than this checkout's paths.
EXECUTABLE = "/usr/local/bin/campaign-sync"
CONFIG = "/etc/campaign-sync/campaign-sync.yaml"


def test_crontab_example_matches_the_example_config() -> None:
    loaded = config.load(str(EXAMPLE))
    jobs = [(name, job.type, job.schedule) for name, job in loaded.jobs.items()]
    expected = crontab_lines(jobs, EXECUTABLE, CONFIG, loaded.timezone)
    assert (ROOT / "crontab.example").read_text().splitlines() == expected


def test_crontab_command_prints_absolute_paths_for_this_installation() -> None:
    done = subprocess.run(
        ["campaign-sync", "--config", str(EXAMPLE), "crontab"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    job_lines = [line for line in lines if line[:1].isdigit()]
    assert len(job_lines) == len(config.load(str(EXAMPLE)).jobs)
    for line in job_lines:
        executable = line.split()[5]
        assert Path(executable).is_absolute() and Path(executable).name == "campaign-sync"
        assert f"--config {EXAMPLE} -q" in line
