"""The tab's figure and tables, drawn from what /scaling_law returns (nothing else): the grid's points, the fitted
laws, the live run against the law's prediction for it, and the exponents beside the published ones."""

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from PIL import Image

from demos.scaling_laws.law import joint_law
from hub.figures import figure_png

LIVE_COLOUR = "#d62728"


def short(n: float) -> str:
    """16,384 -> 16k; 1,048,576 -> 1M."""
    if n >= 1e6:
        return f"{n / 2**20:g}M" if n % 2**20 == 0 else f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 2**10:g}k" if n % 2**10 == 0 else f"{n / 1e3:.0f}k"
    return f"{n:g}"


def _log_axis(ax, axis: str) -> None:
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda value, _: short(value)))


def law_figure(result: dict) -> Image.Image:
    """Left: loss against parameters, one colour per token budget, with the fitted L(N, D) for each budget and the
    fitted L(N) at the largest budget (dashed). Right: loss against tokens, one colour per size. The live run in red on both."""
    points, fit, live = result["points"], result["fit"], result["live"]
    sizes = sorted({p["parameters"] for p in points})
    budgets = sorted({p["tokens"] for p in points})
    fig = Figure(figsize=(12, 4.8))
    by_size, by_tokens = fig.subplots(1, 2)
    n_line = np.geomspace(min(sizes) / 1.5, max(sizes) * 1.5, 100)
    budget_colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(budgets)))
    for tokens, colour in zip(budgets, budget_colours):
        chosen = [p for p in points if p["tokens"] == tokens]
        by_size.scatter([p["parameters"] for p in chosen], [p["loss"] for p in chosen], color=colour, s=22, zorder=3)
        law = joint_law((n_line, np.full_like(n_line, tokens)), **_law(fit))
        by_size.plot(n_line, law, color=colour, lw=1, label=f"{short(tokens)} tokens")
    fit_size = result["fit_size"]
    size_law_line = fit_size["E"] + fit_size["A"] / n_line ** fit_size["alpha"]
    label = f"L(N) = E + A/N^α at {short(fit_size['tokens'])} tokens, α = {fit_size['alpha']:.2f}"
    by_size.plot(n_line, size_law_line, "k--", lw=1, label=label)
    _log_axis(by_size, "x")
    by_size.set_xlabel("non-embedding parameters N (log scale)")
    by_size.set_ylabel("validation loss (nats per byte)")
    by_size.set_title("Loss against model size: dots = grid, lines = fitted L(N, D)", fontsize=10)

    d_line = np.geomspace(min(budgets) / 1.5, max(budgets) * 1.5, 100)
    size_colours = colormaps["plasma"](np.linspace(0.0, 0.85, len(sizes)))
    for parameters, colour in zip(sizes, size_colours):
        chosen = sorted((p for p in points if p["parameters"] == parameters), key=lambda p: p["tokens"])
        by_tokens.plot([p["tokens"] for p in chosen], [p["loss"] for p in chosen], "o-", color=colour, ms=4, lw=1.2,
                       label=f"N = {short(parameters)}")  # fmt: skip
        law = joint_law((np.full_like(d_line, parameters), d_line), **_law(fit))
        by_tokens.plot(d_line, law, ":", color=colour, lw=1)
    _log_axis(by_tokens, "x")
    by_tokens.set_xlabel("training tokens D (bytes, log scale)")
    by_tokens.set_ylabel("validation loss (nats per byte)")
    by_tokens.set_title("Loss against training tokens: dots = grid, dotted = fitted law", fontsize=10)

    if live and live["loss"] is not None:
        tokens, loss, predicted = live["tokens"], live["loss"], live["predicted_loss"]
        label = f"your run: {live['size']}, {short(tokens)} tokens"
        by_size.plot([live["parameters"]] * 2, [loss, predicted], color=LIVE_COLOUR, lw=1, zorder=4)
        by_size.scatter([live["parameters"]], [loss], marker="*", s=180, color=LIVE_COLOUR, zorder=5, label=label)
        by_size.scatter([live["parameters"]], [predicted], marker="o", s=70, facecolors="none",
                        edgecolors=LIVE_COLOUR, zorder=5, label="the law's prediction for it")  # fmt: skip
        seen = live["checkpoints"]
        by_tokens.plot([c["tokens"] for c in seen], [c["loss"] for c in seen], "-", color=LIVE_COLOUR, lw=1.5)
        by_tokens.scatter([tokens], [loss], marker="*", s=180, color=LIVE_COLOUR, zorder=5, label=label)
        by_tokens.scatter([tokens], [predicted], marker="o", s=70, facecolors="none", edgecolors=LIVE_COLOUR,
                          zorder=5)  # fmt: skip
    for ax in (by_size, by_tokens):  # below the axes: inside, they would cover points
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    for ax in (by_size, by_tokens):
        ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return figure_png(fig)


def _law(fit: dict) -> dict:
    return {key: fit[key] for key in ("E", "A", "alpha", "B", "beta")}


EXPONENT_COLUMNS = ["law", "α (parameters)", "β (tokens)", "E (nats)", "fitted to"]


def exponents_table(result: dict) -> pd.DataFrame:
    fit, fit_size, published = result["fit"], result["fit_size"], result["published"]
    kaplan, chinchilla = published["kaplan_2020"], published["chinchilla_2022"]
    n_points = len(result["points"])
    rows = [
        ["this grid: L(N, D) = E + A/N^α + B/D^β", f"{fit['alpha']:.3f}", f"{fit['beta']:.3f}", f"{fit['E']:.3f}",
         f"all {n_points} points; RMS error {fit['rmse']:.3f}"],
        ["this grid: L(N) = E + A/N^α", f"{fit_size['alpha']:.3f}", "", f"{fit_size['E']:.3f}",
         f"the {short(fit_size['tokens'])}-token points; RMS error {fit_size['rmse']:.3f}"],
        ["Kaplan et al. 2020: L(N) = (N_c/N)^α_N", f"{kaplan['alpha_N']}", f"{kaplan['alpha_D']} (L(D))", "",
         "768 to 1.5 billion non-embedding parameters, WebText2"],
        ["Hoffmann et al. 2022 (Chinchilla)", f"{chinchilla['alpha']}", f"{chinchilla['beta']}", f"{chinchilla['E']}",
         "400+ models, 70 million to 16 billion parameters, 5 to 500 billion tokens"],
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=EXPONENT_COLUMNS)


POINT_COLUMNS = ["parameters N", "training tokens D", "validation loss (nats per byte)", "fitted L(N, D)"]


def points_table(result: dict) -> pd.DataFrame:
    fit = _law(result["fit"])
    rows = [
        [
            p["parameters"],
            p["tokens"],
            round(p["loss"], 4),
            round(float(joint_law((p["parameters"], p["tokens"]), **fit)), 4),
        ]
        for p in result["points"]
    ]
    return pd.DataFrame(rows, columns=POINT_COLUMNS)
