"""The race: train the three models on the same batches with the same seed, then measure each one's held-out
accuracy and forward time at every length. Plain values in, plain values out (the JSON of /sequence_race).

    result = sequence_race(length_max=64, seed=0, steps=500)
    result["models"]["attention"]["accuracy"]  # one fraction per length in result["lengths"]
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from demos.before_transformers.models import (
    KINDS,
    build_model,
    cnn_receptive_field,
    longest_path,
    parameter_count,
    sequential_steps,
)
from demos.before_transformers.task import (
    CHANCE,
    MAX_LENGTH,
    held_out_data_seed,
    make_batch,
    race_lengths,
    training_data_seed,
)
from hub.checks import check_int
from hub.errors import HubError

BATCH = 64  # sequences per training step
LEARNING_RATE = 3e-3
HELD_OUT = 512  # held-out sequences per length
TIMING_REPEATS = (
    10  # forward passes timed per model and length (the fastest is kept: the least disturbed by other work)
)


@dataclass(frozen=True)
class RaceSettings:
    length_max: int = 64
    seed: int = 0
    steps: int = 500


DEFAULTS = RaceSettings()
# name, low, high: the tab's sliders show them and check_settings holds API callers to them
LIMITS = {
    "length_max": ("Longest length", 8, MAX_LENGTH),
    "seed": ("Seed", 0, 2**31 - 1),
    "steps": ("Training steps", 10, 1000),
}
# One run costs about steps x length per model; this bounds a request to what the defaults cost, times 3.
MAX_STEP_TOKENS = 3 * DEFAULTS.steps * DEFAULTS.length_max


def check_settings(length_max: Any = DEFAULTS.length_max, seed: Any = DEFAULTS.seed, steps: Any = DEFAULTS.steps):
    settings = RaceSettings(
        check_int(length_max, *LIMITS["length_max"]),
        check_int(seed, *LIMITS["seed"]),
        check_int(steps, *LIMITS["steps"]),
    )
    if settings.steps * settings.length_max > MAX_STEP_TOKENS:
        raise HubError(
            f"Training steps x Longest length is at most {MAX_STEP_TOKENS:,} per run (a run must stay short on a "
            f"shared CPU); got {settings.steps} x {settings.length_max}. Lower one of them."
        )
    return settings


# ---------------------------------------------------------------------------------------------------------
# Training, evaluation and timing: what the Code accordion shows, run as it is here


def training_losses(model: nn.Module, seed: int, steps: int, lengths: list[int]) -> Iterator[float]:
    """Train `model` in place, one step per item: a batch of one length at a time, the lengths taken in turn.
    Every model gets exactly the same batches (the same seed draws them)."""
    generator = torch.Generator().manual_seed(training_data_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for step in range(steps):
        tokens, answers = make_batch(generator, lengths[step % len(lengths)], BATCH)
        loss = nn.functional.cross_entropy(model(tokens), answers)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # keeps the LSTM's long backward pass stable
        optimizer.step()
        yield loss.item()
    model.eval()


def held_out_accuracy(model: nn.Module, seed: int, lengths: list[int]) -> list[float]:
    """The fraction of new sequences of each length whose answer the model gets right."""
    generator = torch.Generator().manual_seed(held_out_data_seed(seed))
    accuracy = []
    with torch.inference_mode():
        for length in lengths:
            tokens, answers = make_batch(generator, length, HELD_OUT)
            accuracy.append((model(tokens).argmax(-1) == answers).float().mean().item())
    return accuracy


def ms_per_sequence(model: nn.Module, length: int) -> float:
    """Forward time for one sequence of this length, in milliseconds: the fastest of TIMING_REPEATS passes."""
    tokens, _ = make_batch(torch.Generator().manual_seed(0), length, 1)
    times = []
    with torch.inference_mode():
        model(tokens)
        for _ in range(TIMING_REPEATS):
            start = time.perf_counter()
            model(tokens)
            times.append(1000 * (time.perf_counter() - start))
    return min(times)


# ---------------------------------------------------------------------------------------------------------
# The race


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread here: these models are too small to gain from a second one (on a busy CPU two threads
    wait on each other many times slower), and a fixed thread count keeps the sums in the same order, so a seed
    gives the same accuracies on any machine. The count new threads start with is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Progress:
    """Where a race is: the model training now (0, 1, 2), its step, its last loss, and the result once done."""

    model: int
    step: int
    steps: int
    loss: float | None = None
    result: dict | None = None


class Stopped(Exception):
    """The race was stopped (Stop, a cancel, the visitor left)."""


def sequence_race(
    length_max: Any = DEFAULTS.length_max,
    seed: Any = DEFAULTS.seed,
    steps: Any = DEFAULTS.steps,
    should_stop: Callable[[], bool] = lambda: False,
    report: Callable[[Progress], None] = lambda progress: None,
    report_every: int = 5,
) -> dict:
    """Train the RNN, the CNN and the attention model in turn on the same batches, then measure them. Raises
    Stopped when `should_stop()` turns true between two steps."""
    settings = check_settings(length_max, seed, steps)
    with one_torch_thread():
        return _race(settings, should_stop, report, report_every)


def _race(
    settings: RaceSettings, should_stop: Callable[[], bool], report: Callable[[Progress], None], report_every: int
) -> dict:
    lengths = race_lengths(settings.length_max)
    models, train_seconds = {}, {}
    for index, kind in enumerate(KINDS):
        start = time.perf_counter()
        model = build_model(kind, settings.seed)
        report(Progress(index, 0, settings.steps))
        for step, loss in enumerate(training_losses(model, settings.seed, settings.steps, lengths), start=1):
            if should_stop():
                raise Stopped(f"{kind} at step {step} of {settings.steps}")
            if step % report_every == 0 or step == settings.steps:
                report(Progress(index, step, settings.steps, loss))
        models[kind] = model
        train_seconds[kind] = round(time.perf_counter() - start, 2)
    result = {
        "lengths": lengths,
        "chance": CHANCE,
        "models": {
            kind: {
                "parameters": parameter_count(model),
                "accuracy": held_out_accuracy(model, settings.seed, lengths),
                "ms_per_sequence": [round(ms_per_sequence(model, n), 4) for n in lengths],
                "sequential_steps": [sequential_steps(kind, n) for n in lengths],
                "longest_path": [longest_path(kind, n) for n in lengths],
            }
            for kind, model in models.items()
        },
        "cnn_receptive_field": cnn_receptive_field(),
        "train_seconds": train_seconds,
        "settings": {"length_max": settings.length_max, "seed": settings.seed, "steps": settings.steps},
    }
    report(Progress(len(KINDS) - 1, settings.steps, settings.steps, result=result))
    return result
