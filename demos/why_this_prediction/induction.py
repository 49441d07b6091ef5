"""Heads with a job: induction heads. Random tokens repeated twice: the second half can only be predicted by
copying from the first, and the heads that attend to "the token after this token's earlier copy" do the copying."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.nn.functional import cross_entropy

from demos.attention.head_ablation import switch_heads_off
from hub.checks import check_choice, check_int
from hub.errors import HubError
from hub.figures import figure_png, heatmap
from hub.inside import DECODER, Transformer, forward

MIN_LENGTH, MAX_LENGTH = 4, 200
MAX_SEED = 2**31 - 1


def check_induction_inputs(t: Transformer, length: Any, seed: Any, model: Any = DECODER) -> tuple[int, int]:
    check_choice(model, "Model", (DECODER,))  # only a decoder predicts the next token from what came before
    room = (t.model.config.max_position_embeddings - 1) // 2  # two halves and the start token must fit
    length = check_int(length, "Length", MIN_LENGTH, min(MAX_LENGTH, room))
    return length, check_int(seed, "Seed", 0, MAX_SEED)


def repeated_tokens(t: Transformer, length: int, seed: int) -> torch.Tensor:
    """The start token, then `length` random ordinary tokens, then the same tokens again: shape (1, 2 length + 1)."""
    special = set(t.tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(t.model.config.vocab_size) if i not in special])
    generator = torch.Generator().manual_seed(seed)
    half = ordinary[torch.randint(len(ordinary), (length,), generator=generator)]
    start = torch.tensor([t.tokenizer.bos_token_id])
    return torch.cat([start, half, half])[None].to(t.model.device)


def position_losses(logits: torch.Tensor, ids: torch.Tensor) -> list[float]:
    """The loss of predicting each token from the ones before it (entry i: token i + 1)."""
    return cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none").tolist()


def half_means(losses: list[float], length: int) -> tuple[float, float]:
    """Mean loss on the first half's tokens and on the second half's."""
    return float(np.mean(losses[:length])), float(np.mean(losses[length:]))


def induction_scores(attentions: tuple[torch.Tensor, ...], length: int) -> list[list[float]]:
    """Per layer and head: the mean attention from each token of the second half to the token right after its
    earlier copy (query 1 + length + k looks at key 2 + k), over k."""
    queries = torch.arange(1 + length, 1 + 2 * length)
    keys = queries - length + 1
    return [layer[0][:, queries, keys].float().mean(-1).tolist() for layer in attentions]


@dataclass
class Induction:
    ids: torch.Tensor
    length: int
    losses: list[float]
    scores: list[list[float]]  # [layer][head], model order


def induction(t: Transformer, length: Any = 50, seed: Any = 0, model: Any = DECODER) -> Induction:
    length, seed = check_induction_inputs(t, length, seed, model)
    if t.kind != DECODER:
        raise HubError("Induction heads are found in a decoder: pick the decoder (GPT-2).")
    ids = repeated_tokens(t, length, seed)
    out = forward(t, ids, attentions=True)
    return Induction(ids, length, position_losses(out.logits, ids), induction_scores(out.attentions, length))


def summary(result: Induction) -> dict:
    first, second = half_means(result.losses, result.length)
    return {"loss_first_half": first, "loss_second_half": second, "scores": result.scores}


def top_heads(scores: list[list[float]], k: int) -> list[tuple[int, int]]:
    """The k heads with the highest scores, as (layer, head) counted from 1."""
    flat = np.asarray(scores).ravel()
    heads = len(scores[0])
    return [(int(i) // heads + 1, int(i) % heads + 1) for i in np.argsort(-flat, kind="stable")[:k]]


def ablated_losses(t: Transformer, result: Induction, heads: list[tuple[int, int]]) -> list[float]:
    """The per-position losses again, with these heads switched off (a private view; the loaded model is untouched)."""
    with torch.inference_mode():
        logits = switch_heads_off(t, heads)(input_ids=result.ids).logits
    return position_losses(logits, result.ids)


def loss_figure(result: Induction, ablated: list[float] | None, heads: list[tuple[int, int]]) -> Image.Image:
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    positions = range(1, len(result.losses) + 1)
    ax.plot(positions, result.losses, lw=1.2, label="the model as loaded")
    if ablated is not None:
        names = ", ".join(f"{layer}.{head}" for layer, head in heads)
        ax.plot(positions, ablated, lw=1.2, color="#c0392b", label=f"heads {names} switched off")
    ax.axvline(result.length + 0.5, color="#888", ls="--")
    ax.text(result.length / 2, ax.get_ylim()[1] * 0.95, "first half", ha="center", va="top", fontsize=8)
    ax.text(1.5 * result.length, ax.get_ylim()[1] * 0.95, "second half (a copy)", ha="center", va="top", fontsize=8)
    ax.set_xlabel("predicted token (position in the sequence)")
    ax.set_ylabel("loss (nats; lower = better predicted)")
    ax.legend(fontsize=8, loc="center left")
    return figure_png(fig)


def score_figure(result: Induction) -> Image.Image:
    layers, heads = len(result.scores), len(result.scores[0])
    return heatmap(
        result.scores,
        [f"layer {i}" for i in range(1, layers + 1)],
        [f"head {h}" for h in range(1, heads + 1)],
        "layer",
        "head",
        title="Induction score: attention to the token after the earlier copy",
        vmax=max(1e-9, float(np.max(result.scores))),
        value_label="mean attention weight",
    )


def induction_code(t: Transformer, length: int, seed: int, dtype: torch.dtype) -> str:
    """Library code that builds the same sequence and prints the losses and the scores the view shows."""
    return f"""import numpy as np
import torch
from torch.nn.functional import cross_entropy
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = AutoModelForCausalLM.from_pretrained({t.name!r}, dtype={dtype}, attn_implementation="eager").eval()
length = {length}
special = set(tokenizer.all_special_ids)
ordinary = torch.tensor([i for i in range(model.config.vocab_size) if i not in special])
half = ordinary[torch.randint(len(ordinary), (length,), generator=torch.Generator().manual_seed({seed}))]
ids = torch.cat([torch.tensor([tokenizer.bos_token_id]), half, half])[None]
with torch.no_grad():
    out = model(input_ids=ids, output_attentions=True)
losses = cross_entropy(out.logits[0, :-1].float(), ids[0, 1:], reduction="none")
print("loss first half", round(float(losses[:length].mean()), 4), "second half", round(float(losses[length:].mean()), 4))
queries = torch.arange(1 + length, 1 + 2 * length)  # each token of the second half ...
for layer, attention in enumerate(out.attentions, start=1):  # ... looks at the token after its earlier copy
    print(f"layer {{layer}}", [round(float(s), 4) for s in attention[0][:, queries, queries - length + 1].mean(-1)])
"""
