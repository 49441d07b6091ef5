"""The race's two figures, drawn from its JSON result: held-out accuracy against length (with chance and the CNN's
receptive field), and the cost of reading a sequence (measured milliseconds, sequential steps, longest path)."""

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from PIL import Image

from demos.before_transformers.models import KINDS, NAMES
from hub.figures import figure_png

COLOURS = {"rnn": "tab:orange", "cnn": "tab:green", "attention": "tab:blue"}
MARKERS = {"rnn": "o", "cnn": "s", "attention": "^"}


def accuracy_figure(result: dict) -> Image.Image:
    lengths, field = result["lengths"], result["cnn_receptive_field"]
    fig = Figure(figsize=(7.2, 4.0))
    ax = fig.subplots()
    if lengths[-1] > field:  # where the CNN's last position cannot see the answer at all
        ax.axvspan(field, lengths[-1] + 2, color="tab:green", alpha=0.08, lw=0)
    ax.axvline(field, color="tab:green", ls=":", lw=1.5)
    ax.text(field, 1.02, f" CNN receptive field: {field} tokens", color="tab:green", fontsize=8, va="bottom")
    ax.axhline(result["chance"], color="grey", ls="--", lw=1)
    ax.text(lengths[0], result["chance"] + 0.015, f"chance ({result['chance']:.1%})", color="grey", fontsize=8)
    for kind in KINDS:
        model = result["models"][kind]
        label = f"{NAMES[kind]}, {model['parameters']:,} parameters"
        ax.plot(lengths, model["accuracy"], marker=MARKERS[kind], color=COLOURS[kind], label=label)
    ax.set_xlabel("sequence length (tokens; the question is the last one)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.08)
    ax.set_xlim(0, lengths[-1] + 2)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    return figure_png(fig)


def cost_figure(result: dict) -> Image.Image:
    lengths = result["lengths"]
    fig = Figure(figsize=(10.5, 3.6))
    timing, steps = fig.subplots(1, 2)
    for kind in KINDS:
        model = result["models"][kind]
        timing.plot(lengths, model["ms_per_sequence"], marker=MARKERS[kind], color=COLOURS[kind], label=NAMES[kind])
        steps.plot(lengths, model["sequential_steps"], marker=MARKERS[kind], color=COLOURS[kind], label=NAMES[kind])
        steps.plot(lengths, model["longest_path"], ls="--", color=COLOURS[kind], alpha=0.7)
    timing.set_xlabel("sequence length (tokens)")
    timing.set_ylabel("ms per sequence (forward only, measured)")
    timing.set_title("Time to read one sequence on this machine", fontsize=10)
    timing.set_ylim(bottom=0)
    steps.set_xlabel("sequence length (tokens)")
    steps.set_ylabel("steps")
    steps.set_title("Sequential steps (solid) and longest path between two tokens (dashed)", fontsize=9)
    steps.set_ylim(bottom=0)
    for ax in (timing, steps):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure_png(fig)
