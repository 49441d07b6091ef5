"""Layer by layer: the logit lens, what the model would predict if it stopped after each layer, with its table,
figure and code. data_flow.py draws how the model is built; layers_tab.py is the tab that shows both."""

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter
from PIL import Image

from demos.inside.data_flow import short_name
from hub.errors import HubError
from hub.figures import figure_png
from hub.inside import DECODER, Transformer, tokenize

LENS_CELL_TEXT_MAX_COLUMNS = 32  # wider than this, a cell is too narrow for a word: colours only (the table has all)

# ---------------------------------------------------------------------------------------------------------
# The work: the logit lens


def no_word_head_message(t: Transformer) -> str:
    because = f"{t.notice} " if t.notice else ""
    return (
        f"{because}{t.name} has no masked-word head, so it cannot say which word it would predict after each "
        "layer; pick the decoder (GPT-2) or BERT. The tab's diagram still shows how it is built."
    )


def layer_predictions(t: Transformer, text: str) -> dict:
    """The logit lens: the model's own output head applied to the hidden state after each layer, at every
    position. Row 0 = the embeddings, row L = after block L; the last row is the model's own prediction."""
    head = t.word_head()
    if head is None:
        raise HubError(no_word_head_message(t))
    tokens = tokenize(t, text)
    rows = []
    with torch.inference_mode():
        # The body without its head: the loop below applies the head to every layer, the last one included.
        hidden_states = t.body(input_ids=tokens.ids, output_hidden_states=True).hidden_states
        for layer, hidden in enumerate(hidden_states):
            if t.is_gpt2 and layer < len(hidden_states) - 1:  # GPT-2's last entry already went through ln_f
                hidden = t.body.ln_f(hidden)
            # One layer at a time: 64 positions × 50k words is 13 MB in float32; all layers at once would be 13×.
            probs, ids = head(hidden)[0].float().softmax(-1).max(-1)  # float: the store may run bf16
            words = t.tokenizer.convert_ids_to_tokens(ids.tolist())
            rows.append([{"token": w, "prob": p} for w, p in zip(words, probs.tolist())])
    mask_id = t.tokenizer.mask_token_id if t.kind != DECODER else None  # GPT-2 has no mask
    masks = [i for i, token_id in enumerate(tokens.ids[0].tolist()) if mask_id is not None and token_id == mask_id]
    return {
        "tokens": tokens.tokens,
        "layers": rows,
        "model": t.name,
        "kind": t.kind,
        "masks": masks,  # positions (from 0) of the mask tokens, where BERT's prediction is the point
        "notice": t.notice,
    }


def layer_names(result: dict) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(1, len(result["layers"]))]


def readable(t: Transformer, token: str, limit: int = 8) -> str:
    """A token as a person reads it: GPT-2's Ġ as a space, whitespace made visible, long words cut."""
    text = t.tokenizer.convert_tokens_to_string([token])
    shown = text.strip() or text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)  # control bytes have no glyph
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def lens_table(t: Transformer, result: dict) -> pd.DataFrame:
    columns = [f"{i + 1} {readable(t, token, 14)}" for i, token in enumerate(result["tokens"])]
    rows = []
    for name, cells in zip(layer_names(result), result["layers"]):
        shown = [f"{readable(t, c['token'], 14)} · {100 * c['prob']:.1f}%" for c in cells]
        rows.append({"layer": name} | dict(zip(columns, shown)))
    return pd.DataFrame(rows)


def percent(p: float) -> str:
    """Short enough for a cell, and never "0%" for a probability that is small but not zero."""
    return f"{100 * p:.0f}%" if p >= 0.01 else f"{100 * p:.1f}%" if p >= 0.0005 else "<0.1%"


def lens_figure(t: Transformer, result: dict) -> Image.Image:
    """Rows = layers (embeddings on top), columns = positions; colour = the top token's probability, each cell
    written with that token. Bold = the token really there (BERT) or really next in the text (GPT-2)."""
    tokens, layers, masks = result["tokens"], result["layers"], set(result["masks"])
    probs = np.array([[c["prob"] for c in row] for row in layers])
    n_rows, n_columns = probs.shape
    annotate = n_columns <= LENS_CELL_TEXT_MAX_COLUMNS
    width = (0.7 if annotate else 0.2) * n_columns + 2.6  # at most about 25 inches (64 tokens)
    fig = Figure(figsize=(max(5.0, width), max(3.0, 0.5 * n_rows + 1.8)))
    ax = fig.add_subplot()
    image = ax.imshow(probs, cmap="Blues", norm=Normalize(0, 1), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_columns), [readable(t, token) for token in tokens], rotation=60, ha="left", fontsize=8)
    ax.set_yticks(range(n_rows), layer_names(result), fontsize=8)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("position →  (the text's tokens)")
    ax.set_ylabel("layer ↓")
    for j in masks:
        ax.get_xticklabels()[j].set_color("#d35400")
        ax.add_patch(Rectangle((j - 0.5, -0.5), 1, n_rows, fill=False, ec="#d35400", lw=2))
    what = "the next token" if t.kind == DECODER else "the token at each position"
    bold = "bold = the text's real next token" if t.kind == DECODER else "bold = the token really there"
    ax.set_title(f"What {short_name(t)} would predict ({what}) if it stopped after each layer", pad=12)
    legend = f"cell = top token and its probability; {bold}; the last row is the model's own output"
    fig.text(0.01, 0.005, legend, fontsize=7.5, color="#555")
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("probability of the top token", fontsize=8)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if annotate:
        for i, row in enumerate(layers):
            for j, cell in enumerate(row):
                real = tokens[j] if t.kind != DECODER else tokens[j + 1] if j + 1 < n_columns else None
                colour = "white" if cell["prob"] > 0.6 else "black"
                label = f"{readable(t, cell['token'])}\n{percent(cell['prob'])}"
                weight = "bold" if cell["token"] == real and j not in masks else "normal"
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color=colour, weight=weight)
    return figure_png(fig)


def lens_code(t: Transformer, text: str, dtype: torch.dtype) -> str:
    """transformers code that prints the same numbers as the figure, from the same weights."""
    auto = "AutoModelForCausalLM" if t.is_gpt2 else "AutoModelForMaskedLM"
    if t.is_gpt2:
        head = """        if layer < len(hidden_states) - 1:  # the last entry already went through the final norm
            h = model.transformer.ln_f(h)
        probs = model.lm_head(h)[0].float().softmax(-1)  # the next-token head, at every position"""
    else:
        head = "        probs = model.cls(h)[0].float().softmax(-1)  # the masked-word head, at every position"
    return f"""import torch
from transformers import {auto}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = {auto}.from_pretrained({t.name!r}, dtype={dtype}).eval()
inputs = tokenizer({text!r}, return_tensors="pt")
with torch.no_grad():
    hidden_states = model(**inputs, output_hidden_states=True).hidden_states  # embeddings, then one per block
    for layer, h in enumerate(hidden_states):
{head}
        top = probs.max(-1)
        words = tokenizer.convert_ids_to_tokens(top.indices.tolist())
        percent = [round(100 * p, 3) for p in top.values.tolist()]  # the top token's probability, in percent
        print("embeddings" if layer == 0 else f"layer {{layer}}", list(zip(words, percent)))
"""
