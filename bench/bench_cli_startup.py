"""How fast the command line answers: `unlearnable --help` and `unlearnable list` against a bare Python.

    .venv/bin/python bench/bench_cli_startup.py [--repeat 7]

Each command runs as its own process (``python -m unlearnable ...``, the interpreter running this
script) `--repeat` times after one untimed run (which fills the file cache); the median wall time
is printed with its ratio to ``python -c pass``. ``python -c "import torch"`` is the comparison: what
every command cost when the parser was built next to torch. Target: --help within 0.3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_HELP_S = 0.3

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "unlearnable --help": [sys.executable, "-m", "unlearnable", "--help"],
    "unlearnable train --help": [sys.executable, "-m", "unlearnable", "train", "--help"],
    "unlearnable list": [sys.executable, "-m", "unlearnable", "list"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def median_seconds(argv: list[str], repeat: int) -> float:
    subprocess.run(argv, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per command (default 7)")
    args = parser.parse_args()
    times = {name: median_seconds(argv, args.repeat) for name, argv in COMMANDS.items()}
    bare = times["python -c pass"]
    print(f"median of {args.repeat} runs each ({sys.executable})")
    for name, seconds in times.items():
        print(f"  {name:<28} {seconds:6.3f} s  {seconds / bare:5.1f}× python -c pass")
    help_s = times["unlearnable --help"]
    print(f"--help: {help_s:.3f} s, target ≤ {TARGET_HELP_S} s: {'met' if help_s <= TARGET_HELP_S else 'MISSED'}")


if __name__ == "__main__":
    main()
