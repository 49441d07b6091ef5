"""The laws fitted to the grid's points with scipy.optimize.curve_fit, and the published ones they are compared with.

    L(N)    = E + A / N^alpha                    over the points at the grid's largest token budget
    L(N, D) = E + A / N^alpha + B / D^beta       over every point of the grid (the form of Hoffmann et al. 2022)

N = non-embedding parameters, D = training tokens (bytes here), L = validation loss in nats per byte.
"""

import math

import numpy as np
from scipy.optimize import curve_fit

from hub.errors import HubError

# Published figures, each with where it is printed.
KAPLAN = {
    "alpha_N": 0.076,
    "alpha_D": 0.095,
    "source": "Kaplan et al. 2020, Scaling Laws for Neural Language Models, arXiv:2001.08361, eq. 1.1 and 1.2 "
    "(L(N) = (N_c / N)^alpha_N, N_c = 8.8e13 non-embedding parameters; alpha_D = 0.095)",
}
CHINCHILLA = {
    "E": 1.69,
    "A": 406.4,
    "B": 410.7,
    "alpha": 0.34,
    "beta": 0.28,
    "source": "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, arXiv:2203.15556, "
    "section 3.3, Approach 3 (L(N, D) = E + A / N^alpha + B / D^beta)",
}

# Where curve_fit starts and what it may not leave: no negative loss floor, no negative terms, exponents below 3.
_START = {"E": 1.0, "A": 10.0, "alpha": 0.3, "B": 10.0, "beta": 0.3}
_BOUNDS = {"E": (0.0, 10.0), "A": (0.0, 1e7), "alpha": (0.0, 3.0), "B": (0.0, 1e7), "beta": (0.0, 3.0)}


def size_law(n: np.ndarray | float, E: float, A: float, alpha: float) -> np.ndarray | float:
    return E + A / np.power(n, alpha)


def joint_law(nd: tuple[np.ndarray, np.ndarray], E: float, A: float, alpha: float, B: float, beta: float):
    n, d = nd
    return E + A / np.power(n, alpha) + B / np.power(d, beta)


def _fit(function, x, losses: np.ndarray, names: list[str]) -> dict[str, float]:
    values, _ = curve_fit(
        function,
        x,
        losses,
        p0=[_START[name] for name in names],
        bounds=([_BOUNDS[name][0] for name in names], [_BOUNDS[name][1] for name in names]),
        maxfev=20_000,
    )
    return {name: float(value) for name, value in zip(names, values)}


def _rmse(predicted: np.ndarray, losses: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted - losses) ** 2)))


def fit_size_law(points: list[dict]) -> dict:
    """L(N) = E + A / N^alpha, least squares over the points at the largest token budget (one per size)."""
    tokens = max(p["tokens"] for p in points)
    chosen = sorted((p for p in points if p["tokens"] == tokens), key=lambda p: p["parameters"])
    if len(chosen) < 3:
        raise HubError("The law L(N) needs at least 3 sizes at the largest token budget.")
    n = np.array([p["parameters"] for p in chosen], dtype=float)
    losses = np.array([p["loss"] for p in chosen], dtype=float)
    fit = _fit(size_law, n, losses, ["E", "A", "alpha"])
    return fit | {"tokens": tokens, "rmse": _rmse(size_law(n, **fit), losses)}


def fit_joint_law(points: list[dict]) -> dict:
    """L(N, D) = E + A / N^alpha + B / D^beta, least squares over every point."""
    if len(points) < 6:
        raise HubError("The law L(N, D) needs at least 6 points.")
    n = np.array([p["parameters"] for p in points], dtype=float)
    d = np.array([p["tokens"] for p in points], dtype=float)
    losses = np.array([p["loss"] for p in points], dtype=float)
    fit = _fit(joint_law, (n, d), losses, ["E", "A", "alpha", "B", "beta"])
    return fit | {"rmse": _rmse(joint_law((n, d), **fit), losses)}


def predict(fit: dict, parameters: int, tokens: int | None = None) -> float:
    """The loss a law predicts: L(N) for a size-law fit, L(N, D) for a joint fit (which needs the tokens)."""
    value = fit["E"] + fit["A"] / parameters ** fit["alpha"]
    if "B" in fit:
        value += fit["B"] / tokens ** fit["beta"]
    return float(value)


def bits(nats: float) -> float:
    return nats / math.log(2)
