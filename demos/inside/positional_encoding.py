"""Positional encoding: how a transformer knows word order. The sinusoid of "Attention Is All You Need" beside the
tables GPT-2 and BERT learned: one vector per position, how alike every two positions' vectors are, their figures
and the code that prints the same numbers. word_order.py holds the experiment, positional_encoding_tab.py the tab."""

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from hub.checks import check_choice, check_int
from hub.errors import HubError
from hub.figures import figure_png
from hub.inside import DECODER, ENCODER, load_transformer
from hub.models import ModelStore

KINDS = ("sinusoidal", "gpt2", "bert")
MAX_POSITIONS = 1024  # GPT-2's whole table; a 1024 x 1024 similarity is already about 20 MB of JSON
MAX_DIMS = 1024


# ---------------------------------------------------------------------------------------------------------
# The work: the encodings


@dataclass
class Encoding:
    kind: str
    model: str  # where the table comes from ("" for the sinusoid: it is a formula)
    matrix: np.ndarray  # positions x dimensions
    similarity: np.ndarray  # positions x positions, cosine
    notice: str = ""

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model,
            "positions": len(self.matrix),
            "dims": self.matrix.shape[1],
            "matrix": self.matrix.tolist(),
            "similarity": self.similarity.tolist(),
            "notice": self.notice,
        }


def sinusoid(positions: int, dims: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (Vaswani et al. 2017)."""
    pos = np.arange(positions)[:, None]
    two_i = np.arange(0, dims, 2)[None, :]
    angle = pos / 10000 ** (two_i / dims)
    matrix = np.zeros((positions, dims))
    matrix[:, 0::2] = np.sin(angle)
    matrix[:, 1::2] = np.cos(angle)
    return matrix


def cosine_similarity(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.maximum(norms, 1e-12)  # a zero row would give NaN, which JSON cannot carry
    return unit @ unit.T


def label(kind: str, model: str = "") -> str:
    """How a person names an encoding: the sinusoid, or the model whose table it is (MiniLM when it stands in)."""
    if kind == "sinusoidal":
        return "Sinusoid"
    return "GPT-2" if kind == "gpt2" else "MiniLM" if "minilm" in model.lower() else "BERT"


def positional_encoding(
    store: ModelStore, kind: object = "sinusoidal", positions: object = 64, dims: object = 128, on_load=None
) -> Encoding:
    """The encoding of the first `positions` positions and the cosine similarity between every two of them."""
    kind = check_choice(kind, "Kind", KINDS)
    positions = check_int(positions, "Positions", 1, MAX_POSITIONS)
    dims = check_int(dims, "Dimensions", 2, MAX_DIMS)
    if kind == "sinusoidal":
        if dims % 2:
            raise HubError(f"Dimensions must be even (a sine and a cosine per frequency), got {dims}.")
        matrix = sinusoid(positions, dims)
        return Encoding(kind, "", matrix, cosine_similarity(matrix))
    t = load_transformer(store, DECODER if kind == "gpt2" else ENCODER, on_load)
    table = t.position_table
    notice = t.notice
    if positions > len(table):  # a learned table has no row past the longest text the model was trained on
        notice = (
            f"{notice} {label(kind, t.name)} learned {len(table)} positions only: showing all {len(table)}.".strip()
        )
        positions = len(table)
    matrix = table[:positions].detach().float().cpu().numpy().astype(np.float64)  # bf16 weights -> plain numbers
    return Encoding(kind, t.name, matrix, cosine_similarity(matrix), notice)


# ---------------------------------------------------------------------------------------------------------
# The figures and the code


def _draw_values(fig: Figure, ax, e: Encoding, title: str) -> None:
    # Learned tables have a few large outliers (GPT-2's position 0): scale to the 99th percentile so the rest shows.
    top = 1.0 if e.kind == "sinusoidal" else float(np.percentile(np.abs(e.matrix), 99)) or 1.0
    image = ax.imshow(e.matrix, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto", interpolation="auto")
    ax.set(title=title, xlabel="dimension →", ylabel="← position")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, extend="neither" if e.kind == "sinusoidal" else "both")


def _draw_similarity(fig: Figure, ax, e: Encoding, title: str) -> None:
    # interpolation "auto" smooths where a table has more rows than the figure has pixels: with "nearest", most
    # of a 1024-position diagonal would fall between pixels and vanish.
    image = ax.imshow(e.similarity, cmap="RdBu_r", vmin=-1, vmax=1, aspect="equal", interpolation="auto")
    ax.set(title=title, xlabel="position →", ylabel="← position")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)


def _name(e: Encoding) -> str:
    return label(e.kind, e.model) + ("" if e.kind == "sinusoidal" else " (learned)")


def encoding_figures(e: Encoding) -> tuple[Image.Image, Image.Image]:
    # matplotlib's Figure without pyplot keeps no global state, so visitors can draw at the same time.
    n, d = e.matrix.shape
    values = Figure(figsize=(5.6, 4.4))
    _draw_values(values, values.subplots(), e, f"{_name(e)}: {n} positions × {d} dims")
    similarity = Figure(figsize=(5.2, 4.4))
    _draw_similarity(similarity, similarity.subplots(), e, f"{_name(e)}: cosine similarity")
    return figure_png(values), figure_png(similarity)


def comparison_figure(encodings: list[Encoding]) -> Image.Image:
    fig = Figure(figsize=(4.4 * len(encodings), 8.0))
    # Fixed spacing: a constrained layout would measure every label again and double the drawing time.
    axes = fig.subplots(2, len(encodings), squeeze=False, gridspec_kw={"wspace": 0.6, "hspace": 0.35})
    for column, e in enumerate(encodings):
        _draw_values(fig, axes[0, column], e, f"{_name(e)}: values")
        _draw_similarity(fig, axes[1, column], e, f"{_name(e)}: cosine similarity")
    return figure_png(fig)


def encoding_code(e: Encoding, dtype: torch.dtype) -> str:
    n, d = e.matrix.shape
    similarity = """unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
similarity = unit @ unit.T  # cosine similarity: positions x positions
"""
    if e.kind == "sinusoidal":
        return f"""import numpy as np

positions, dims = {n}, {d}
pos = np.arange(positions)[:, None]
two_i = np.arange(0, dims, 2)[None, :]
angle = pos / 10000 ** (two_i / dims)
matrix = np.zeros((positions, dims))
matrix[:, 0::2] = np.sin(angle)  # PE[pos, 2i]   = sin(pos / 10000^(2i/d))
matrix[:, 1::2] = np.cos(angle)  # PE[pos, 2i+1] = cos(pos / 10000^(2i/d))
{similarity}"""
    table = "model.wpe.weight" if e.kind == "gpt2" else "model.embeddings.position_embeddings.weight"
    return f"""import numpy as np
import torch
from transformers import AutoModel

model = AutoModel.from_pretrained({e.model!r}, dtype={dtype})
table = {table}  # one learned row per position
matrix = table[:{n}].detach().float().numpy().astype(np.float64)  # positions x dimensions
{similarity}"""
