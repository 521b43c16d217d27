#!/usr/bin/env python3
"""Run one test file N times, each in a fresh pytest process, and count the runs that failed.

A flaky test passes alone and fails one run in thirty: this is how to prove a race gone (or find it).
Prints one line per failed run (the failing test ids) and a summary; exit 1 when any run failed.
Every run is bounded (``--timeout`` seconds, killed by its own PID after that).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="test file, e.g. tests/test_deploy_unit.py")
    parser.add_argument("--runs", type=int, default=50, help="how many runs (default 50, at most 1000)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take (default 300)")
    args = parser.parse_args()
    if not (REPO / args.file).is_file():
        print(f"error: --file {args.file}: no such test file under the repository; name one in tests/", file=sys.stderr)
        return 2
    if not 1 <= args.runs <= 1000:
        print(f"error: --runs {args.runs}: must be from 1 to 1000", file=sys.stderr)
        return 2
    failed, started = [], time.monotonic()
    for run in range(1, args.runs + 1):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", args.file]
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            failed.append(run)
            print(f"run {run}: timed out after {args.timeout:g}s")
            continue
        if done.returncode != 0:
            failed.append(run)
            ids = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
            print(f"run {run}: exit {done.returncode}: {', '.join(ids) or done.stdout.strip().splitlines()[-1:]}")
    seconds = time.monotonic() - started
    print(f"{args.file}: {len(failed)} failed run(s) of {args.runs} ({seconds:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
