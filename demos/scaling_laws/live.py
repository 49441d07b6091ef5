"""What /scaling_law returns: the shipped grid's points, the laws fitted to them, and (when a size and a token budget
are given) one run trained now, as a hub.jobs.Job, with the law's prediction for it.

    for result in scaling_law("2 x 64", 16_384):  # progress while it trains; the last result is the whole answer
        print(result["live"])
"""

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from demos.scaling_laws.grid import load_grid
from demos.scaling_laws.law import CHINCHILLA, KAPLAN, fit_joint_law, fit_size_law, predict
from demos.scaling_laws.training import GRID_SIZES, SETTINGS, SIZES_BY_NAME, Run, Size, train
from hub.checks import check_choice, check_int
from hub.errors import HubError
from hub.jobs import Job

LIVE_TIME_LIMIT_S = 60  # a live run stops here, with what it measured so far
MIN_TOKENS, MAX_TOKENS = 2 * SETTINGS.tokens_per_step, 262_144
DEFAULT_SIZE, DEFAULT_TOKENS = "2 x 32", 16_384
LIVE_CHECKPOINTS = tuple(2**k for k in range(11, 19))  # validation loss after 2,048, 4,096, ... tokens
MAX_SEED = 2**31 - 1
UPDATE_EVERY_S = 0.5
_live_slots = threading.Semaphore(1)  # one live run at a time per process: a stopped one holds it until it has ended


def check_live(size: Any, tokens: Any, seed: Any) -> tuple[Size, int, int] | None:
    """The live run asked for, or None when neither a size nor a token budget is given (a seed is checked anyway:
    a wrong one is said, not ignored)."""
    seed = check_int(seed, "Seed", 0, MAX_SEED)
    if size in (None, "") and tokens is None:
        return None
    if size in (None, ""):
        raise HubError(f"Size is missing: pick one of {', '.join(SIZES_BY_NAME)} (layers x width).")
    name = check_choice(size, "Size", list(SIZES_BY_NAME))
    per_step = SETTINGS.tokens_per_step
    budget = check_int(DEFAULT_TOKENS if tokens is None else tokens, "Training tokens", MIN_TOKENS, MAX_TOKENS)
    if budget % per_step:
        raise HubError(f"Training tokens must be a multiple of {per_step:,} (one step's batch), got {budget:,}.")
    return SIZES_BY_NAME[name], budget, check_int(seed, "Seed", 0, MAX_SEED)


def grid_result(grid: dict) -> dict:
    """The grid's points and the laws fitted to them (the part of the answer that needs no training)."""
    points = grid["points"]
    return {
        "points": points,
        "fit": fit_joint_law(points),
        "fit_size": fit_size_law(points),
        "published": {"kaplan_2020": KAPLAN, "chinchilla_2022": CHINCHILLA},
        "grid": {key: grid.get(key) for key in ("commit", "cpu", "dtype", "threads", "seconds", "settings")},
        "live": None,
    }


def live_result(run: Run, fit: dict) -> dict:
    tokens, loss = run.checkpoints[-1] if run.checkpoints else (0, None)
    return {
        "size": run.size.name,
        "layers": run.size.layers,
        "width": run.size.width,
        "heads": run.size.heads,
        "in_grid": run.size in GRID_SIZES,
        "parameters": run.parameters,
        "tokens": tokens,  # the tokens it was trained on (fewer than asked when it was stopped)
        "tokens_asked": run.tokens,
        "seed": run.seed,
        "loss": loss,
        "predicted_loss": predict(fit, run.parameters, tokens) if tokens else None,
        "checkpoints": [{"tokens": t, "loss": value} for t, value in run.checkpoints],
        "step": run.step,
        "total_steps": run.total_steps,
        "seconds": round(run.seconds, 2),
        "stopped": run.stopped or None,
        "done": run.done,
    }


def live_runs(size: Size, tokens: int, seed: int, stop: threading.Event | None = None) -> Iterator[Run | None]:
    """The run in a worker thread (a hub.jobs.Job): its latest copy every UPDATE_EVERY_S (None before its first
    step; a tick even when nothing changed, so that a caller can be closed), and the last one. Setting `stop`, or closing the iterator (Stop,
    a cancel, a visitor who left), ends it at the next step; so does the time limit."""

    def work(job: Job) -> None:
        # The time limit counts from its first step: the wait for another visitor's run is not counted.
        job.deadline = time.monotonic() + LIVE_TIME_LIMIT_S

        def why_stop() -> str:
            if job.stop.is_set():
                return "stopped"
            return f"stopped at the time limit of {LIVE_TIME_LIMIT_S} s" if job.out_of_time() else ""

        checkpoints = [t for t in LIVE_CHECKPOINTS if t < tokens]
        train(size, tokens, checkpoints, seed, should_stop=why_stop, on_step=lambda run: job.post(run.snapshot()))

    job = Job(LIVE_TIME_LIMIT_S, stop, slots=_live_slots)
    return job.run(work, name="scaling-law", update_every_s=UPDATE_EVERY_S, heartbeat=True, on_model_thread=True)


def scaling_law(
    size: str | None = None, tokens: int | None = None, seed: int = 0, stop: threading.Event | None = None
) -> Iterator[dict]:
    """The grid and its laws at once; with a size and a token budget, then the live run as it trains (its latest
    state in "live"), ending with its last checkpoint and the law's prediction for it."""
    live = check_live(size, tokens, seed)
    result = grid_result(load_grid())
    yield result
    if live is None:
        return
    latest = result
    with closing(live_runs(*live, stop=stop)) as runs:
        for run in runs:  # None = not started yet: the grid again, so that a caller can be closed meanwhile
            if run is not None:
                latest = result | {"live": live_result(run, result["fit"])}
            yield latest
