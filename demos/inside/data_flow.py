"""How data flows through a model, from tokens to a prediction: its parts in order with their real sizes and
parameter counts (read from its own config and modules), drawn as boxes and arrows."""

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from PIL import Image
from torch import nn

from hub.figures import figure_png
from hub.inside import Transformer

# ---------------------------------------------------------------------------------------------------------
# The model, drawn from its own config and modules


@dataclass
class Part:
    name: str
    sizes: str
    parameters: int  # counted on the real modules; a tensor shared with an earlier part is not counted again
    note: str = ""


def _count(modules: list[nn.Module], seen: set[int]) -> int:
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def mlp_width(t: Transformer) -> int:
    config = t.model.config
    return (config.n_inner or 4 * t.width) if t.is_gpt2 else config.intermediate_size


def model_parts(t: Transformer) -> list[Part]:
    """The parts data flows through, in order, with their real sizes and parameter counts. The counts add up to
    the model's total: tied weights (GPT-2's head is its token embedding table) are counted once, where first used."""
    config, body, d, seen = t.model.config, t.body, t.width, set()
    vocab, positions = config.vocab_size, t.position_table.shape[0]
    if t.is_gpt2:
        embeddings = [body.wte, body.wpe]
        embedding_sizes = f"tokens {vocab:,} × {d} + positions {positions:,} × {d}"
    else:
        embeddings = [body.embeddings]
        embedding_sizes = (
            f"tokens {vocab:,} × {d} + positions {positions:,} × {d} + segments {config.type_vocab_size} × {d}, "
            "then LayerNorm"
        )
    parts = [Part("embeddings", embedding_sizes, _count(embeddings, seen), f"{d} numbers per token")]
    per_block = _count([t.blocks[0]], set())
    norm_place = "before" if t.is_gpt2 else "after"
    parts.append(
        Part(
            f"{t.layers} blocks",
            f"attention: {t.heads} heads × {t.head_size} (= {d}); MLP {d} → {mlp_width(t):,} → {d}",
            _count(list(t.blocks), seen),
            f"{per_block:,} per block; LayerNorm {norm_place} attention and MLP",
        )
    )
    if t.is_gpt2:
        parts.append(
            Part("final norm (ln_f)", f"LayerNorm over {d}", _count([body.ln_f], seen), "after the last block")
        )
    else:
        parts.append(Part("final norm", "none", 0, "BERT has no norm after the stack: each block ends with LayerNorm"))
    head = t.word_head()
    if head is None:
        parts.append(Part("word head", "none", 0, f"{t.name} has no masked-word head (it makes sentence vectors)"))
    else:
        tied = t.model.get_output_embeddings().weight is t.model.get_input_embeddings().weight
        tie = f"its {vocab:,} × {d} weights are the token embeddings (tied, counted once)" if tied else ""
        if t.is_gpt2:
            parts.append(Part("LM head", f"{d} → {vocab:,}", _count([head], seen), tie))
        else:
            extra = "dense + GELU + LayerNorm, then "
            parts.append(Part("MLM head", f"{extra}{d} → {vocab:,}", _count([head], seen), tie + "; its own bias"))
    rest = _count([t.model], seen)  # what the flow does not use, e.g. MiniLM's pooler
    if rest:
        parts.append(Part("other (unused here)", "pooler", rest, "the [CLS] pooler, not on the path to words"))
    return parts


def total_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def short_name(t: Transformer) -> str:
    """A Hub id as it is; a long local folder as its last two parts, so it fits in a figure."""
    return "/".join(t.name.rstrip("/").split("/")[-2:])


def short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:,}"


PARTS_COLUMNS = ["part", "parameters", "sizes", "note"]


def parts_table(t: Transformer) -> pd.DataFrame:
    parts = model_parts(t)
    rows = [[p.name, p.parameters, p.sizes, p.note] for p in parts]
    rows.append(["total", sum(p.parameters for p in parts), "", ""])
    return pd.DataFrame(rows, columns=PARTS_COLUMNS)


# ---------------------------------------------------------------------------------------------------------
# The drawing


def _box(ax, x: float, y: float, w: float, h: float, text: str, colour: str, size: float = 8.5) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=colour, ec="#444"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, wrap=True)


def _arrow(ax, x: float, y0: float, y1: float) -> None:
    ax.annotate("", (x, y1), (x, y0), arrowprops={"arrowstyle": "-|>", "color": "#444", "lw": 1.2})


def diagram(t: Transformer) -> Image.Image:
    """Boxes and arrows from the tokens to the probabilities, with the loaded model's own numbers."""
    embeddings, blocks, final, head = model_parts(t)[:4]  # always these four first, in this order
    d, vocab, positions = t.width, t.model.config.vocab_size, t.position_table.shape[0]
    fig = Figure(figsize=(6.2, 7.8))  # small enough that the page shows its text at a readable size
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.7, 11)
    ax.axis("off")
    # Short and centred: in the page the image's label covers the top left corner and its buttons the top right.
    flow = "tokens in, probabilities out" if t.word_head() else "tokens in, vectors out"
    ax.text(5, 10.65, flow, ha="center", fontsize=9, style="italic", color="#555")
    _box(ax, 2.5, 9.5, 5, 0.7, "text → tokenizer → n token ids", "#f2f2f2")
    _arrow(ax, 5, 9.5, 9.1)
    segments = "" if t.is_gpt2 else f"\n+ segments {t.model.config.type_vocab_size} × {d}, LayerNorm"
    _box(ax, 0.3, 7.9, 4.3, 1.2, f"token embeddings\n{vocab:,} words × d = {d}", "#dbe9f6")
    _box(ax, 5.4, 7.9, 4.3, 1.2, f"position embeddings\n{positions:,} positions × {d}{segments}", "#dbe9f6")
    ax.text(5, 8.5, "+", ha="center", va="center", fontsize=16, weight="bold")
    ax.text(5.15, 7.55, f"{short(embeddings.parameters)} parameters", fontsize=7.5, color="#555")
    _arrow(ax, 5, 7.9, 7.3)
    ax.add_patch(Rectangle((0.2, 3.85), 9.6, 3.45, fc="#fff7e6", ec="#c98a00", lw=1.5, ls="--"))
    ax.text(0.4, 6.95, f"× {t.layers} blocks", fontsize=10, weight="bold", color="#a06a00")
    each = f"{short(blocks.parameters // t.layers)} parameters each, {short(blocks.parameters)} in all"
    ax.text(9.6, 6.95, each, ha="right", fontsize=7.5, color="#555")
    norm = "LayerNorm, then " if t.is_gpt2 else ""
    after = "" if t.is_gpt2 else ", then LayerNorm"
    mask = "each token sees earlier tokens only" if t.is_gpt2 else "each token sees every token"
    _box(
        ax, 0.8, 5.35, 8.4, 1.25, f"{norm}attention: {t.heads} heads of size {t.head_size}\n({mask}){after}", "#fde2c8"
    )
    _box(ax, 0.8, 4.25, 8.4, 0.85, f"{norm}MLP: {d} → {mlp_width(t):,} → {d}{after}", "#fde2c8")
    residual = "each part adds its result to the token's vector (the residual stream)"
    ax.text(5, 3.95, residual, ha="center", va="bottom", fontsize=7.5, color="#a06a00")
    _arrow(ax, 5, 3.85, 3.3)
    if t.is_gpt2:
        _box(ax, 1.5, 2.6, 7, 0.7, f"final LayerNorm (ln_f): {final.parameters:,} parameters", "#e3f1e0")
    else:
        _box(ax, 0.8, 2.6, 8.4, 0.7, "no final norm: every block already ends with LayerNorm", "#eeeeee", 8)
    _arrow(ax, 5, 2.6, 2.1)
    if t.word_head() is None:
        text = "no word head: this encoder makes\nsentence vectors, not words"
    else:
        what = "next-token" if t.is_gpt2 else "masked-word"
        text = f"{what} head: {head.sizes}\n{short(head.parameters)} new parameters"
        text += " (weights tied to the token embeddings)" if "tied" in head.note else ""
    _box(ax, 0.5, 1.0, 9, 1.1, text, "#e3f1e0", 8)
    _arrow(ax, 5, 1.0, 0.6)
    out = f"a probability for each of {vocab:,} tokens" if t.word_head() else f"a vector of width {d}"
    ax.text(5, 0.3, f"{out}, at every position", ha="center", fontsize=8.5)
    name = short_name(t)
    kind = "decoder" if t.is_gpt2 else "encoder"
    total = f"{name} ({kind}): {short(total_parameters(t.model))} parameters in all"
    ax.text(5, -0.4, total, ha="center", fontsize=9, weight="bold")
    return figure_png(fig)


_diagrams: dict[tuple[int, str], Image.Image] = {}


def cached_diagram(t: Transformer) -> Image.Image:
    """A loaded model never changes while the server runs: draw each one once."""
    key = (id(t.model), t.name)
    if key not in _diagrams:
        _diagrams[key] = diagram(t)
    return _diagrams[key]
