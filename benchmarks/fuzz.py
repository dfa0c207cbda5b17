"""Fuzzed configs and data files through the CLI: how many end in a traceback or a hang.

The case makers are the fuzz test's (tests/test_fuzz.py, which runs a small sample in CI); this
runs a bigger sample and counts, per command and exit code, and per kind of problem (a traceback,
a hang over `--limit` seconds, more than one error line).

    .venv/bin/python benchmarks/fuzz.py --configs 500 --data 300 --limit 10
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the case makers live with the tests

import test_fuzz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=500, help="fuzzed config files (default 500)")
    parser.add_argument("--data", type=int, default=300, help="fuzzed data files (default 300)")
    parser.add_argument("--limit", type=int, default=10, help="seconds before a run counts as a hang (default 10)")
    parser.add_argument("--seed", type=int, default=17, help="random seed (default 17)")
    args = parser.parse_args()
    test_fuzz._TIME_LIMIT = args.limit
    signal.signal(signal.SIGALRM, test_fuzz._on_alarm)
    for kind, cases in (("configs", args.configs), ("data", args.data)):
        began = time.perf_counter()
        figures = test_fuzz.count(kind, cases, args.seed)
        print(f"{kind}: {dict(figures)} ({time.perf_counter() - began:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
