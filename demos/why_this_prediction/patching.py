"""Where it was decided: activation patching. The corrupted prompt runs again with the clean prompt's residual
stream put back at one layer and one position (or one head's output at the prediction's position), and we measure
how much of the clean answer's logit difference comes back."""

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from demos.inside.layers import readable
from demos.why_this_prediction.common import Prediction, hookable, read_prediction, scores_at, word_id, word_text
from hub.errors import HubError
from hub.figures import heatmap
from hub.inside import DECODER, Transformer

MAX_TOKENS = 32  # (layers + 1) x tokens patched runs: 13 x 32 batched rows for GPT-2


def residual_points(t: Transformer) -> list[nn.Module]:
    """The modules whose first input is the residual stream after layer 0 (the embeddings), 1, ..., L: each block,
    then what reads the last block's output (GPT-2's final norm, BERT's word head)."""
    last = t.body.ln_f if t.is_gpt2 else t.model.cls
    return [*t.blocks, last]


@dataclass
class Pair:
    clean: Prediction
    corrupted: Prediction
    target_id: int
    foil_id: int

    @property
    def position(self) -> int:
        return self.clean.position


def read_pair(t: Transformer, clean: Any, corrupted: Any, target: Any = None, foil: Any = None) -> Pair:
    """Both prompts, checked to line up token by token; the target defaults to the clean prompt's top word and the
    foil to the corrupted prompt's (or the clean prompt's second word, where both agree)."""
    clean_run = read_prediction(t, clean, "Clean prompt", MAX_TOKENS)
    corrupted_run = read_prediction(t, corrupted, "Corrupted prompt", MAX_TOKENS)
    n_clean, n_corrupted = (len(run.tokens.tokens) for run in (clean_run, corrupted_run))
    if n_clean != n_corrupted:
        raise HubError(
            f"The clean prompt is {n_clean} tokens and the corrupted prompt {n_corrupted}: patching puts back one "
            "position at a time, so both must have the same number of tokens. Change words for words of the same "
            f"token count. Clean: {' | '.join(clean_run.tokens.tokens)}; corrupted: "
            f"{' | '.join(corrupted_run.tokens.tokens)}."
        )
    if clean_run.position != corrupted_run.position:
        raise HubError("The mask must be at the same position in both prompts.")
    if clean_run.tokens.tokens == corrupted_run.tokens.tokens:
        raise HubError("The two prompts are the same tokens: change a word or two in the corrupted one.")
    target_id = int(clean_run.logits.argmax()) if target in (None, "") else word_id(t, target, "Target")
    if foil in (None, ""):
        foil_id = int(corrupted_run.logits.argmax())
        if foil_id == target_id:
            foil_id = int(clean_run.logits.topk(2).indices[1])
    else:
        foil_id = word_id(t, foil, "Foil")
    if foil_id == target_id:
        raise HubError("Foil must be another word than the target: the logit difference compares two words.")
    return Pair(clean_run, corrupted_run, target_id, foil_id)


def logit_difference(pair: Pair, at: torch.Tensor) -> torch.Tensor:
    """logit(target) - logit(foil), per row of a batch of scores at the prediction's position."""
    return at[:, pair.target_id] - at[:, pair.foil_id]


def record_inputs(model: nn.Module, modules: list[nn.Module], ids: torch.Tensor) -> list[torch.Tensor]:
    """The first input of each module in one run of `ids`."""
    seen: list[torch.Tensor | None] = [None] * len(modules)
    handles = [
        module.register_forward_pre_hook(lambda _, args, i=i: seen.__setitem__(i, args[0].detach().clone()))
        for i, module in enumerate(modules)
    ]
    try:
        with torch.inference_mode():
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def patched_differences(t: Transformer, pair: Pair, module: nn.Module, patch) -> torch.Tensor:
    """The logit difference of a batch of corrupted runs in which `patch(input)` rewrites `module`'s first input
    (row i of the batch carries patch number i)."""

    def hook(_, args):
        return (patch(args[0].clone()), *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        rows = patch.rows
        with torch.inference_mode():
            at = scores_at(t, pair.position, input_ids=pair.corrupted.tokens.ids.expand(rows, -1))
    finally:
        handle.remove()
    return logit_difference(pair, at)


class _Positions:
    """Row i gets the clean residual stream at position i."""

    def __init__(self, clean: torch.Tensor):
        self.clean, self.rows = clean, clean.shape[1]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        every = torch.arange(self.rows)
        hidden[every, every] = self.clean[0]
        return hidden


class _Heads:
    """Row h gets head h's clean output (its slice of the input to the output projection) at one position."""

    def __init__(self, clean: torch.Tensor, position: int, heads: int, head_size: int):
        self.clean, self.position, self.rows, self.head_size = clean, position, heads, head_size

    def __call__(self, mixed: torch.Tensor) -> torch.Tensor:
        for head in range(self.rows):
            part = slice(head * self.head_size, (head + 1) * self.head_size)
            mixed[head, self.position, part] = self.clean[0, self.position, part]
        return mixed


def restored_fraction(differences: torch.Tensor, clean_diff: float, corrupted_diff: float) -> list[float]:
    return ((differences - corrupted_diff) / (clean_diff - corrupted_diff)).tolist()


def patching(t: Transformer, clean: Any, corrupted: Any, target: Any = None, foil: Any = None) -> dict:
    """The share of the logit difference each patch restores: restored[l][p] for the residual stream after layer l
    (0 = the embeddings) at position p, and heads[l][h] for head h+1 of layer l+1 at the prediction's position."""
    pair = read_pair(t, clean, corrupted, target, foil)
    clean_diff, corrupted_diff = (
        float(run.logits[pair.target_id] - run.logits[pair.foil_id]) for run in (pair.clean, pair.corrupted)
    )
    if abs(clean_diff - corrupted_diff) < 1e-6:
        raise HubError(
            "Both prompts give the same logit difference between target and foil, so there is nothing to restore: "
            "pick a corrupted prompt that changes the answer, or another target and foil."
        )
    with hookable(t) as view:
        points = residual_points(view)
        clean_stream = record_inputs(view.model, points, pair.clean.tokens.ids)
        restored = [
            restored_fraction(patched_differences(view, pair, point, _Positions(stream)), clean_diff, corrupted_diff)
            for point, stream in zip(points, clean_stream)
        ]
        projections = [view.output_projection(layer) for layer in range(1, view.layers + 1)]
        clean_heads = record_inputs(view.model, projections, pair.clean.tokens.ids)
        heads = [
            restored_fraction(
                patched_differences(view, pair, projection, _Heads(mixed, pair.position, t.heads, t.head_size)),
                clean_diff,
                corrupted_diff,
            )
            for projection, mixed in zip(projections, clean_heads)
        ]
    return {
        "tokens": pair.clean.tokens.tokens,
        "corrupted_tokens": pair.corrupted.tokens.tokens,
        "layers": t.layers,
        "restored": restored,
        "heads": heads,
        "clean_diff": clean_diff,
        "corrupted_diff": corrupted_diff,
        "target": word_text(t, pair.target_id),
        "foil": word_text(t, pair.foil_id),
        "position": pair.position,
    }


API_KEYS = ("tokens", "layers", "restored", "clean_diff", "corrupted_diff")


def column_labels(t: Transformer, result: dict) -> list[str]:
    """Each position's clean token, with the corrupted one where they differ."""
    return [
        readable(t, a) if a == b else f"{readable(t, a)}→{readable(t, b)}"
        for a, b in zip(result["tokens"], result["corrupted_tokens"])
    ]


def layer_figure(t: Transformer, result: dict) -> Image.Image:
    rows = ["embeddings"] + [f"after layer {i}" for i in range(1, result["layers"] + 1)]
    return heatmap(
        result["restored"],
        rows,
        column_labels(t, result),
        "residual stream",
        "position (clean→corrupted where they differ)",
        title=f"Share of logit({result['target']!r}) − logit({result['foil']!r}) restored by patching one cell",
        cmap="RdBu_r",
        vmin=-1.0,
        vmax=1.0,
        value_label="restored (100% = the clean answer)",
    )


def head_figure(t: Transformer, result: dict) -> Image.Image:
    where = "last position" if t.kind == DECODER else "mask"
    return heatmap(
        result["heads"],
        [f"layer {i}" for i in range(1, result["layers"] + 1)],
        [f"head {h}" for h in range(1, t.heads + 1)],
        "layer",
        "head",
        title=f"One head's output patched, at the {where}",
        cmap="RdBu_r",
        vmin=-1.0,
        vmax=1.0,
        value_label="restored",
    )


def patching_code(t: Transformer, clean: str, corrupted: str, result: dict, target_id: int, foil_id: int,
                  dtype: torch.dtype) -> str:  # fmt: skip
    """Plain transformers with one hook per patch, one run per cell: prints the heatmap's rows in percent."""
    auto = "AutoModelForCausalLM" if t.is_gpt2 else "AutoModelForMaskedLM"
    points = "[*model.transformer.h, model.transformer.ln_f]" if t.is_gpt2 else "[*model.bert.encoder.layer, model.cls]"
    return f"""import torch
from transformers import {auto}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = {auto}.from_pretrained({t.name!r}, dtype={dtype}).eval()
clean = tokenizer({clean!r}, return_tensors="pt").input_ids
corrupted = tokenizer({corrupted!r}, return_tensors="pt").input_ids
position = {result["position"]}  # where the prediction is read
target, foil = {target_id}, {foil_id}  # {result["target"]!r}, {result["foil"]!r}
points = {points}  # their first input: the residual stream after the embeddings, layer 1, ...


def diff(ids):
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, position].float()
    return float(logits[target] - logits[foil])


clean_stream = []
handles = [p.register_forward_pre_hook(lambda m, a: clean_stream.append(a[0].clone())) for p in points]
clean_diff = diff(clean)
for h in handles:
    h.remove()
corrupted_diff = diff(corrupted)
for layer, point in enumerate(points):
    row = []
    for p in range(clean.shape[1]):
        def put_back(module, args, layer=layer, p=p):
            hidden = args[0].clone()
            hidden[0, p] = clean_stream[layer][0, p]
            return (hidden, *args[1:])
        handle = point.register_forward_pre_hook(put_back)
        row.append(round(100 * (diff(corrupted) - corrupted_diff) / (clean_diff - corrupted_diff), 2))
        handle.remove()
    print("embeddings" if layer == 0 else f"layer {{layer}}", row)
"""
