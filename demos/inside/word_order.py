"""Why order matters: the same words in two orders go through BERT with its position embeddings and with them set to
zero. Without them its output vectors are the same set, only permuted: attention alone cannot tell the orders apart."""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from hub.errors import HubError
from hub.inside import ENCODER, Transformer, tokenize

EXAMPLE_A, EXAMPLE_B = "the dog bit the man", "the man bit the dog"


# ---------------------------------------------------------------------------------------------------------
# The work


@dataclass
class Matching:
    partner: list[int]  # partner[i] = the position in B of the token matched with A's token i
    difference: list[float]  # the largest |a - b| over the output vector's components, per matched pair

    @property
    def largest(self) -> float:
        return max(self.difference)


@dataclass
class WordOrder:
    model: str
    tokens_a: list[str]
    tokens_b: list[str]
    without_positions: Matching
    with_positions: Matching
    typical: float  # the mean |value| of the output vectors, to read the differences against
    dtype: str
    notice: str = ""

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "tokens_a": self.tokens_a,
            "tokens_b": self.tokens_b,
            "without_positions": {"largest_difference": self.without_positions.largest, **vars(self.without_positions)},
            "with_positions": {"largest_difference": self.with_positions.largest, **vars(self.with_positions)},
            "typical_value": self.typical,
            "dtype": self.dtype,
            "notice": self.notice,
        }


def encoder_outputs(t: Transformer, ids: torch.Tensor, positions: bool = True) -> torch.Tensor:
    """BERT's output vectors computed from its own modules, as BertEmbeddings.forward does (same order of sums),
    with or without the position embeddings. Nothing is hooked: other visitors use the same model meanwhile."""
    embeddings = t.body.embeddings
    with torch.inference_mode():
        h = embeddings.word_embeddings(ids) + embeddings.token_type_embeddings(torch.zeros_like(ids))
        if positions:
            h = h + embeddings.position_embeddings(torch.arange(ids.shape[1], device=ids.device))[None]
        h = embeddings.dropout(embeddings.LayerNorm(h))  # dropout is the identity in eval mode
        return t.body.encoder(h).last_hidden_state[0].float().cpu()  # no mask: one text, every token sees all


def match(ids_a: list[int], ids_b: list[int], out_a: np.ndarray, out_b: np.ndarray) -> Matching:
    """Pair each token of A with the same token in B (a repeated word has several candidates) so that the paired
    vectors are as close as possible (Hungarian algorithm on the distances)."""
    partner = [0] * len(ids_a)
    for token in set(ids_a):
        rows = [i for i, t in enumerate(ids_a) if t == token]
        columns = [j for j, t in enumerate(ids_b) if t == token]
        distances = np.linalg.norm(out_a[rows][:, None] - out_b[columns][None], axis=-1)
        for r, c in zip(*linear_sum_assignment(distances)):
            partner[rows[r]] = columns[c]
    difference = [float(np.abs(out_a[i] - out_b[j]).max()) for i, j in enumerate(partner)]
    return Matching(partner, difference)


def word_order(t: Transformer, text_a: object = EXAMPLE_A, text_b: object = EXAMPLE_B) -> WordOrder:
    """The same words in two orders through an encoder, with its position embeddings and with them set to zero."""
    if t.kind != ENCODER:
        raise HubError("The order experiment runs an encoder (BERT): a decoder's causal mask already sees order.")
    a, b = tokenize(t, text_a), tokenize(t, text_b)
    ids_a, ids_b = a.ids[0].tolist(), b.ids[0].tolist()
    if sorted(ids_a) != sorted(ids_b):
        extra_a = " ".join((Counter(a.tokens) - Counter(b.tokens)).elements()) or "nothing"
        extra_b = " ".join((Counter(b.tokens) - Counter(a.tokens)).elements()) or "nothing"
        raise HubError(
            "The two texts must hold the same tokens in another order. "
            f"A has more of: {extra_a}; B has more of: {extra_b}."
        )
    results = {}
    typical = 0.0
    for positions in (False, True):
        out_a = encoder_outputs(t, a.ids, positions).numpy().astype(np.float64)
        out_b = encoder_outputs(t, b.ids, positions).numpy().astype(np.float64)
        results[positions] = match(ids_a, ids_b, out_a, out_b)
        typical = float(np.abs(out_a).mean())
    notice = t.notice
    if ids_a == ids_b:
        notice = f"{notice} The two texts are in the same order: swap some words in B.".strip()
    dtype = str(t.model.dtype).removeprefix("torch.")
    return WordOrder(t.name, a.tokens, b.tokens, results[False], results[True], typical, dtype, notice)


# ---------------------------------------------------------------------------------------------------------
# The table, the headline and the code

ORDER_COLUMNS = [
    "token",
    "in A at",
    "partner in B, no positions",
    "difference, no positions",
    "partner in B, with positions",
    "difference, with positions",
]


def order_table(r: WordOrder) -> pd.DataFrame:
    columns = (
        r.tokens_a,
        range(len(r.tokens_a)),
        r.without_positions.partner,
        [f"{x:.1e}" for x in r.without_positions.difference],  # tiny numbers: 0.000000 would hide their size
        r.with_positions.partner,
        [round(x, 4) for x in r.with_positions.difference],
    )
    return pd.DataFrame(dict(zip(ORDER_COLUMNS, columns)))


def order_headline(r: WordOrder) -> str:
    return (
        f"**Without positions:** largest difference {r.without_positions.largest:.1e}, zero up to {r.dtype} rounding: "
        f"the same vectors, only permuted.  \n**With positions:** largest difference {r.with_positions.largest:.3f} "
        f"(the output values are about ±{r.typical:.2f}): the order changed what the model computed."
    )


def order_code(r: WordOrder, text_a: str, text_b: str, dtype: torch.dtype) -> str:
    return f"""import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from transformers import AutoModel, AutoTokenizer

source = {r.model!r}
tokenizer = AutoTokenizer.from_pretrained(source)
model = AutoModel.from_pretrained(source, dtype={dtype}, attn_implementation="eager").eval()
E = model.embeddings


def outputs(ids, positions):  # BertEmbeddings.forward by hand, the position embeddings optional
    with torch.no_grad():
        h = E.word_embeddings(ids) + E.token_type_embeddings(torch.zeros_like(ids))
        if positions:
            h = h + E.position_embeddings(torch.arange(ids.shape[1]))[None]
        return model.encoder(E.LayerNorm(h)).last_hidden_state[0].float().numpy().astype(np.float64)


a = tokenizer({text_a!r}, return_tensors="pt").input_ids
b = tokenizer({text_b!r}, return_tensors="pt").input_ids
largest = {{}}
for positions in (False, True):
    out_a, out_b = outputs(a, positions), outputs(b, positions)
    worst = 0.0
    for token in set(a[0].tolist()):  # match each token with the same token in B, closest vectors first
        rows, columns = np.flatnonzero(a[0] == token), np.flatnonzero(b[0] == token)
        distances = np.linalg.norm(out_a[rows][:, None] - out_b[columns][None], axis=-1)
        for r, c in zip(*linear_sum_assignment(distances)):
            worst = max(worst, np.abs(out_a[rows[r]] - out_b[columns[c]]).max())
    largest["with positions" if positions else "without positions"] = float(worst)
print(largest)
"""
