"""Startup benchmark: `campaign-sync list-jobs --json` on config/example beside `python -c pass`.

Target (issue 7): median ≤ 0.20 s wall for list-jobs --json. Prints medians and the ratio
to a bare interpreter start, measured side by side in one run. Usage: python bench/startup.py [N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example" / "campaign-sync.yaml"


def command_path() -> str:
    # The script beside this interpreter, not a shim (pyenv shims add ~0.1 s of bash).
    beside = Path(sys.executable).parent / "campaign-sync"
    return str(beside) if beside.exists() else "campaign-sync"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    with tempfile.TemporaryDirectory() as tmp:
        # A copy of the example with a store that has run history, as in production.
        config = Path(tmp) / "campaign-sync.yaml"
        text = EXAMPLE.read_text().replace("path: inbox", f"path: {EXAMPLE.parent / 'inbox'}")
        config.write_text(text)
        env = {**os.environ, "CAMPAIGN_SYNC_CONFIG": str(config)}
        # An installed package has its bytecode compiled; don't measure recompiling it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        tool = command_path()
        subprocess.run(
            [tool, "-q", "import", "newsletter-import"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "campaign-sync --version": [tool, "--version"],
            "campaign-sync list-jobs --json": [tool, "list-jobs", "--json"],
            "campaign-sync check": [tool, "check"],
        }
        for argv in commands.values():  # warm-up: bytecode written, files in the page cache
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):  # interleaved, so machine noise hits every command alike
            for name, argv in commands.items():
                try:
                    samples[name].append(timed(argv, env))
                except subprocess.CalledProcessError:
                    samples[name].append(float("nan"))
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':34} {'median s':>9} {'min s':>7} {'× python':>9}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:34} {median:9.3f} {min(values):7.3f} {median / base:9.2f}")
    target = statistics.median(samples["campaign-sync list-jobs --json"])
    verdict = "meets" if target <= 0.20 else "MISSES"
    print(f"list-jobs --json median {target:.3f} s: {verdict} the 0.20 s target ({rounds} rounds)")


if __name__ == "__main__":
    main()
