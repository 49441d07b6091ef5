"""The scaling-law tab's grid: every grid size trained once to the largest token budget, its validation loss measured
at each budget, written with the commit, the CPU, the dtype, the thread count and the time it took.

    python -m bench.scaling_grid                      # the shipped grid -> assets/scaling_grid.json (minutes)
    python -m bench.scaling_grid --tiny --out x.json  # 2 sizes x 2 budgets, seconds: what the tests run

Runs on one torch thread: on a shared 2-core machine two threads spin against each other's work (measured: a step of
the smallest model took 20 times longer on 2 threads than on 1 while other programs ran). The losses do not depend
on it (the same seed gives the same numbers on 1 or 2 threads here).
"""

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import cpu_name
from demos.scaling_laws.grid import BUDGETS, GRID_PATH, compute_grid
from demos.scaling_laws.training import GRID_SIZES, SETTINGS, Run

TINY_SIZES = GRID_SIZES[:2]
TINY_BUDGETS = (2_048, 4_096)


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="2 sizes x 2 small budgets: a check that it runs")
    parser.add_argument("--out", type=Path, default=GRID_PATH, help=f"where the JSON goes (default {GRID_PATH})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes, budgets = (TINY_SIZES, TINY_BUDGETS) if args.tiny else (GRID_SIZES, BUDGETS)

    def report(run: Run) -> None:
        losses = ", ".join(f"{tokens:,}: {loss:.3f}" for tokens, loss in run.checkpoints)
        print(f"{run.size.name:>7} {run.parameters:>8,} parameters {run.seconds:6.1f} s  {losses}", flush=True)

    print(f"{len(sizes)} sizes x {len(budgets)} budgets on {cpu_name()}, {torch.get_num_threads()} torch thread(s)")
    grid = compute_grid(sizes, budgets, SETTINGS, on_run=report)
    grid = {
        "commit": commit(),
        "cpu": cpu_name(),
        "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **grid,
    }
    args.out.write_text(json.dumps(grid, indent=1) + "\n")
    print(f"{len(grid['points'])} points in {grid['seconds']:.0f} s -> {args.out}")
    return grid


if __name__ == "__main__":
    main(sys.argv[1:])
