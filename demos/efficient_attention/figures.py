"""The three views' figures and tables, drawn from the numbers the endpoints return."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from PIL import Image

from demos.efficient_attention.sparse import PATTERN_NAMES
from hub.figures import figure_png

CACHED, UNCACHED, FULL, WINDOW = "#2563eb", "#dc2626", "#dc2626", "#2563eb"


def kv_cache_figure(result: dict) -> Image.Image:
    """Left: milliseconds per new token against its position, with and without the cache. Right: the cache's size."""
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    positions = result["positions"]
    left.plot(positions, result["ms_per_token_cached"], "o-", ms=3, color=CACHED, label="with the KV cache")
    uncached = result["ms_per_token_uncached"]
    left.plot(positions[: len(uncached)], uncached, "o-", ms=3, color=UNCACHED, label="without (use_cache=False)")
    left.set_xlabel("position of the new token in the text")
    left.set_ylabel("milliseconds for this token")
    left.set_title("Time per new token (the first one also reads the prompt)", fontsize=10)
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(positions, result["cache_mb"], "o-", ms=3, color=CACHED)
    right.set_xlabel("position of the new token in the text")
    right.set_ylabel("cache size, MB (10⁶ bytes)")
    right.set_title(f"Keys and values kept for every layer ({result['dtype']})", fontsize=10)
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def masks_figure(every: dict, chosen: str, tokens: int) -> Image.Image:
    """Each mask as a picture (dark = the query may read that key), titled with the text's perplexity under it."""
    fig = Figure(figsize=(13, 3.9))
    axes = fig.subplots(1, len(every))
    for ax, (name, entry) in zip(axes, every.items()):
        ax.imshow(entry["mask"].numpy(), cmap="Blues", vmin=0, vmax=1.4, interpolation="nearest")
        ax.set_title(
            f"{PATTERN_NAMES[name]}\nperplexity {entry['perplexity']:.2f}, {entry['scores']:,} scores",
            fontsize=9,
            color="#b91c1c" if name == chosen else "black",
            weight="bold" if name == chosen else "normal",
        )
        ax.set_xlabel("key (token read) →", fontsize=8)
        ax.set_ylabel("query (token reading) ↓", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Attention masks over the text's {tokens} tokens (dark = computed, white = skipped)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def timing_figure(timing: dict, window: int) -> Image.Image:
    """Left: measured milliseconds of one layer's attention against the length. Right: scores computed."""
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    lengths = timing["lengths"]
    left.plot(lengths, timing["ms_full"], "o-", color=FULL, label="full: every score of n × n")
    left.plot(lengths, timing["ms_window"], "o-", color=WINDOW, label=f"sliding window {window}: a band")
    right.plot(lengths, timing["scores_full"], "o-", color=FULL, label="full: n²")
    right.plot(lengths, timing["scores_window"], "o-", color=WINDOW, label=f"band: ≈ n × 2 × {window}")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("text length n (tokens)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    left.set_ylabel("milliseconds (one layer, all heads)")
    left.set_title("Measured time of one attention layer", fontsize=10)
    right.set_ylabel("query-key scores computed per head")
    right.set_title("Scores computed", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def quantize_figure(result: dict) -> Image.Image:
    """Size, speed and agreement with float32, one bar per variant."""
    variants = result["variants"]
    names = list(variants)
    colours = ["#64748b", "#2563eb", "#16a34a"][: len(names)]
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    panels = (
        ("mb", "size, MB (10⁶ bytes)", "Size of the weights", 1.0),
        ("tokens_per_s", "tokens per second", f"Speed of greedy generation ({result['greedy_tokens']} tokens)", 1.0),
        ("agreement_with_float32", "agreement with float32", "Same top token as float32", 100.0),
    )
    for ax, (key, label, title, scale) in zip(axes, panels):
        values = [scale * variants[name][key] for name in names]
        bars = ax.bar(names, values, color=colours)
        ax.bar_label(bars, [f"{v:.1f}%" if scale == 100 else f"{v:.1f}" for v in values], fontsize=8)
        ax.set_ylabel(label)
        ax.set_xlabel("weights")
        ax.set_title(title, fontsize=10)
        if scale == 100:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=100))
            ax.set_ylim(0, 110)
        else:
            ax.set_ylim(0, 1.15 * max(values))
    fig.tight_layout()
    return figure_png(fig)


def top5_table(result: dict) -> pd.DataFrame:
    """One row per rank; one column per variant: the token and its probability in percent."""
    columns = {}
    for name, entry in result["variants"].items():
        columns[name] = [f"{token!r} {100 * p:.2f}%" for token, p in entry["top5"]]
    return pd.DataFrame({"rank": np.arange(1, len(next(iter(columns.values()))) + 1), **columns})
