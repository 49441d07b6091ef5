"""The grid of sizes x training tokens that the laws are fitted to: computed by `python -m bench.scaling_grid`, shipped
as assets/scaling_grid.json (with the commit, the CPU, the dtype and how long it took), read by the tab.

Each size is trained once, to the largest budget, with a constant learning rate after warm-up; its validation loss
is measured as it passes each smaller budget. So the point (N, D) is the model of N parameters after D tokens of
that one run (Kaplan et al. read their L(D) curves off runs the same way).
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from demos.scaling_laws.corpus import HELD_OUT_EVERY, LICENCE, NAME
from demos.scaling_laws.training import GRID_SIZES, SETTINGS, Run, Settings, Size, train
from hub.errors import HubError

GRID_PATH = Path(__file__).resolve().parents[2] / "assets" / "scaling_grid.json"
BUDGETS = tuple(2**k for k in range(15, 21))  # 32,768 to 1,048,576 training tokens (bytes)
POINT_KEYS = {"parameters": int, "tokens": int, "loss": float}


def compute_grid(
    sizes: tuple[Size, ...] = GRID_SIZES,
    budgets: tuple[int, ...] = BUDGETS,
    settings: Settings = SETTINGS,
    on_run: Callable[[Run], None] = lambda run: None,
) -> dict:
    """Train every size to the largest budget; the grid as the JSON file holds it (without the machine's details,
    which the script adds)."""
    start = time.perf_counter()
    runs = []
    for size in sizes:
        run = train(size, max(budgets), checkpoints=list(budgets), settings=settings)
        on_run(run)
        runs.append(run)
    points = [
        {"parameters": run.parameters, "tokens": tokens, "loss": round(loss, 6)}
        for run in runs
        for tokens, loss in run.checkpoints
    ]
    return {
        "points": points,
        "sizes": [
            {
                "name": r.size.name,
                "layers": r.size.layers,
                "width": r.size.width,
                "heads": r.size.heads,
                "parameters": r.parameters,
                "seconds": round(r.seconds, 2),
            }
            for r in runs
        ],  # fmt: skip
        "budgets": list(budgets),
        "settings": asdict(settings),
        "corpus": {
            "name": NAME,
            "licence": LICENCE,
            "held_out": f"every {HELD_OUT_EVERY}th chapter",
            "tokens": "bytes",
        },
        "loss": "mean next-byte cross-entropy on the held-out windows, in nats",
        "seconds": round(time.perf_counter() - start, 1),
    }


def check_grid(grid: dict) -> dict:
    """The grid as the tab needs it: points with whole numbers of parameters and tokens and a finite loss."""
    points = grid.get("points") if isinstance(grid, dict) else None
    if not isinstance(points, list) or not points:
        raise HubError("The scaling grid has no points.")
    for point in points:
        if set(point) != set(POINT_KEYS) or not all(isinstance(point[k], t) for k, t in POINT_KEYS.items()):
            raise HubError(f"A point of the scaling grid is not {{parameters, tokens, loss}}: {point!r}.")
    return grid


def load_grid(path: Path = GRID_PATH) -> dict:
    try:
        return check_grid(json.loads(path.read_text()))
    except FileNotFoundError:
        raise HubError(f"The scaling grid {path.name} is missing: run python -m bench.scaling_grid.") from None
