"""Startup benchmark: `campaign-sync list-jobs --json` on config/example beside `python -c pass`.

Targets: median ≤ 0.20 s wall for list-jobs --json on SQLite, ≤ 0.30 s on PostgreSQL (a
connection and a few queries over loopback or the network). Prints medians and the ratio to a
bare interpreter start, measured side by side in one run.

    python bench/startup.py [N]                                  # SQLite store
    python bench/startup.py [N] --store postgresql://… [--schema NAME]  # PostgreSQL store
"""

from __future__ import annotations

import argparse
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


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=21)
    parser.add_argument("--store", help="a postgresql:// URL (default: an SQLite file)")
    parser.add_argument("--schema", default="public", help="the PostgreSQL store's schema")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    rounds = args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        # A copy of the example with a store that has run history, as in production.
        config = Path(tmp) / "campaign-sync.yaml"
        text = EXAMPLE.read_text().replace("path: inbox", f"path: {EXAMPLE.parent / 'inbox'}")
        if args.store:
            text = text.replace(
                "store: var/campaign-sync.db", f"store: {args.store}\nstore_schema: {args.schema}"
            )
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
    limit = 0.30 if args.store else 0.20
    verdict = "meets" if target <= limit else "MISSES"
    kind = "PostgreSQL" if args.store else "SQLite"
    print(
        f"list-jobs --json median {target:.3f} s on {kind}: {verdict} the {limit:.2f} s target "
        f"({rounds} rounds)"
    )


if __name__ == "__main__":
    main()
