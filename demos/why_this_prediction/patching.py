"""Where it was decided: activation patching. The corrupted prompt runs again with the clean prompt's residual
stream put back at one layer and one position (or one head's output at the prediction's position), and we measure
how much of the clean answer's logit difference comes back. An encoder without a word head (MiniLM) measures a
sentence similarity instead (see similarity.py).

The patched runs share everything below the patched layer with the corrupted run, so the corrupted run's residual
stream is recorded once and each batch of patched runs starts at its layer: only the blocks above it run again. A
decoder's heads are patched at its last position, which changes nothing before it: those runs read the last token
only, after the corrupted run's keys and values for the others."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import DynamicCache

from demos.inside.layers import readable
from demos.why_this_prediction.common import (
    Prediction,
    hookable,
    read_prediction,
    read_tokens,
    scores_at,
    word_id,
    word_text,
)
from demos.why_this_prediction.similarity import Similarity, is_similarity, read_similarity
from hub.errors import HubError
from hub.figures import heatmap
from hub.inside import DECODER, Tokens, Transformer

MAX_TOKENS = 32  # (layers + 1) x tokens patched runs: 13 x 32 batched rows for GPT-2


@dataclass
class Pair:
    clean: Prediction
    corrupted: Prediction
    target_id: int
    foil_id: int

    @property
    def position(self) -> int:
        return self.clean.position


def check_lined_up(clean: Tokens, corrupted: Tokens) -> None:
    n_clean, n_corrupted = len(clean.tokens), len(corrupted.tokens)
    if n_clean != n_corrupted:
        raise HubError(
            f"The clean prompt is {n_clean} tokens and the corrupted prompt {n_corrupted}: patching puts back one "
            "position at a time, so both must have the same number of tokens. Change words for words of the same "
            f"token count. Clean: {' | '.join(clean.tokens)}; corrupted: {' | '.join(corrupted.tokens)}."
        )
    if clean.tokens == corrupted.tokens:
        raise HubError("The two prompts are the same tokens: change a word or two in the corrupted one.")


def read_pair(t: Transformer, clean: Any, corrupted: Any, target: Any = None, foil: Any = None) -> Pair:
    """Both prompts, checked to line up token by token; the target defaults to the clean prompt's top word and the
    foil to the corrupted prompt's (or the clean prompt's second word, where both agree)."""
    clean_run = read_prediction(t, clean, "Clean prompt", MAX_TOKENS)
    corrupted_run = read_prediction(t, corrupted, "Corrupted prompt", MAX_TOKENS)
    check_lined_up(clean_run.tokens, corrupted_run.tokens)
    if clean_run.position != corrupted_run.position:
        raise HubError("The mask must be at the same position in both prompts.")
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


@dataclass
class Setup:
    """Both prompts and what a run of them is measured by: one value per row of a batch of the prompt."""

    clean: Tokens
    corrupted: Tokens
    measure: Callable[[Transformer, torch.Tensor], torch.Tensor]  # (model view, ids) -> value per row
    measure_name: str  # "logit(' Paris') − logit(' Rome')", or the similarity
    position: int | None  # where a head's output is put back; None: every position (the similarity reads them all)
    pair: Pair | None = None  # a word's logit difference
    similarity: Similarity | None = None  # or a sentence similarity


def read_setup(t: Transformer, clean: Any, corrupted: Any, target: Any = None, foil: Any = None) -> Setup:
    if is_similarity(t):
        clean_tokens = read_tokens(t, clean, "Clean prompt", MAX_TOKENS)
        corrupted_tokens = read_tokens(t, corrupted, "Corrupted prompt", MAX_TOKENS)
        check_lined_up(clean_tokens, corrupted_tokens)
        s = read_similarity(t, target, foil, "Foil (a second sentence)")
        measure = lambda view, ids: s.run(view, input_ids=ids)  # noqa: E731
        return Setup(clean_tokens, corrupted_tokens, measure, s.words(), None, similarity=s)
    pair = read_pair(t, clean, corrupted, target, foil)
    measure = lambda view, ids: logit_difference(pair, scores_at(view, pair.position, input_ids=ids))  # noqa: E731
    name = f"logit({word_text(t, pair.target_id)!r}) − logit({word_text(t, pair.foil_id)!r})"
    return Setup(pair.clean.tokens, pair.corrupted.tokens, measure, name, pair.position, pair=pair)


@dataclass
class Recording:
    stream: list[torch.Tensor]  # the residual stream after layer 0 (the embeddings), 1, ..., L: (1, tokens, width)
    mixed: list[torch.Tensor]  # per layer, the heads' outputs side by side (the input of its output projection)
    value: float  # what the run measured


def record(t: Transformer, setup: Setup, ids: torch.Tensor) -> Recording:
    """One run of `ids`: the input of each block, the last block's output, and each output projection's input."""
    blocks = list(t.blocks)
    stream: list = [None] * (len(blocks) + 1)
    mixed: list = [None] * len(blocks)

    def keep(into: list, i: int):
        return lambda _, args: into.__setitem__(i, args[0].detach().clone())

    handles = [block.register_forward_pre_hook(keep(stream, i)) for i, block in enumerate(blocks)]
    handles += [t.output_projection(i + 1).register_forward_pre_hook(keep(mixed, i)) for i in range(len(blocks))]
    handles.append(blocks[-1].register_forward_hook(lambda _, args, out: stream.__setitem__(-1, out.detach().clone())))
    try:
        with torch.inference_mode():
            value = float(setup.measure(t, ids)[0])
    finally:
        for handle in handles:
            handle.remove()
    return Recording(stream, mixed, value)


@contextmanager
def starting_at(t: Transformer, layer: int, stream: torch.Tensor) -> Iterator[None]:
    """For the runs inside: the model runs only blocks layer + 1, ..., L (counted from 1), and the first of them reads
    `stream` (rows, tokens, width) instead of what the blocks below would give. The rest is the library's own forward:
    the embeddings (computed, then replaced), the attention masks, the final norm and the head. `t.model` must be a
    private view (hookable): its block list is cut for the run and put back after it."""
    owner, name = (t.body, "h") if t.is_gpt2 else (t.body.encoder, "layer")
    blocks = getattr(owner, name)
    # GPT-2 loops over its blocks inside its own forward (then its final norm); BERT's encoder takes the stream.
    entry = (blocks[layer] if layer < len(blocks) else t.body.ln_f) if t.is_gpt2 else t.body.encoder
    handle = entry.register_forward_pre_hook(lambda _, args: (stream, *args[1:]))
    setattr(owner, name, nn.ModuleList(list(blocks)[layer:]))
    try:
        yield
    finally:
        setattr(owner, name, blocks)
        handle.remove()


def run_from(t: Transformer, setup: Setup, layer: int, stream: torch.Tensor, hook: tuple | None = None,
             prefix: list | None = None) -> torch.Tensor:  # fmt: skip
    """What a batch of corrupted runs measures (one row per patch) when each starts after `layer` from its row of
    `stream`; `hook` = (module, forward pre-hook) is set for the run. With a decoder's `prefix` (the corrupted run's
    keys and values before the last token), the runs read the last token only, after that prefix."""
    handle = hook[0].register_forward_pre_hook(hook[1]) if hook else None
    rows = stream.shape[0]
    try:
        with starting_at(t, layer, stream), torch.inference_mode():
            if prefix is None:
                return setup.measure(t, setup.corrupted.ids.expand(rows, -1))
            cache = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                                 for k, v in prefix])  # fmt: skip
            last = setup.corrupted.ids[:, -1:].expand(rows, -1)
            at = t.model(input_ids=last, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            return logit_difference(setup.pair, at.float())
    finally:
        if handle is not None:
            handle.remove()


def prefix_cache(t: Transformer, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A decoder's keys and values at every layer for all but the last token of `ids`."""
    cache = t.model(input_ids=ids[:, :-1], use_cache=True, logits_to_keep=1).past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def head_runs(t: Transformer, setup: Setup, layer: int, corrupted: Recording, clean_mixed: torch.Tensor,
              prefix: list | None) -> torch.Tensor:  # fmt: skip
    """One row per head of block `layer` (from 0): its clean output put back at the prediction's position (every
    position in similarity mode). A decoder's prediction is at its last position, and a patch there changes nothing
    before it: with the corrupted run's keys and values before the last token (`prefix`), only that token runs."""
    if prefix is not None:
        stream = corrupted.stream[layer][:, -1:].repeat(t.heads, 1, 1)
        hook = (t.output_projection(layer + 1), _Heads(clean_mixed, -1, t.heads, t.head_size))
        return run_from(t, setup, layer, stream, hook, prefix)
    hook = (t.output_projection(layer + 1), _Heads(clean_mixed, setup.position, t.heads, t.head_size))
    return run_from(t, setup, layer, corrupted.stream[layer].repeat(t.heads, 1, 1), hook)


def with_clean_positions(corrupted: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Row p: the corrupted stream (1, tokens, width) with position p's vector from the clean stream."""
    n = corrupted.shape[1]
    rows = corrupted.repeat(n, 1, 1)
    every = torch.arange(n)
    rows[every, every] = clean[0]
    return rows


class _Heads:
    """A forward pre-hook of an output projection: row h gets head h's clean output (its slice of the projection's
    input) at one position, or at every position."""

    def __init__(self, clean: torch.Tensor, position: int | None, heads: int, head_size: int):
        self.clean, self.heads, self.head_size = clean, heads, head_size
        self.where = slice(None) if position is None else position

    def __call__(self, _module: nn.Module, args: tuple) -> tuple:
        mixed = args[0].clone()
        for head in range(self.heads):
            part = slice(head * self.head_size, (head + 1) * self.head_size)
            mixed[head, self.where, part] = self.clean[0, self.where, part]
        return (mixed, *args[1:])


def patching(t: Transformer, clean: Any, corrupted: Any, target: Any = None, foil: Any = None) -> dict:
    """The share of the clean answer each patch restores: restored[l][p] for the residual stream after layer l
    (0 = the embeddings) at position p, and heads[l][h] for head h+1 of layer l+1 at the prediction's position (every
    position in similarity mode)."""
    return patch(t, read_setup(t, clean, corrupted, target, foil))


def patch(t: Transformer, setup: Setup) -> dict:
    """Patching for prompts already read (the tab reads them once for the figures and the code)."""
    with hookable(t) as view, torch.inference_mode():
        clean, corrupted = record(view, setup, setup.clean.ids), record(view, setup, setup.corrupted.ids)
        if abs(clean.value - corrupted.value) < 1e-6:
            raise HubError(
                f"Both prompts give the same {setup.measure_name}, so there is nothing to restore: pick a corrupted "
                "prompt that changes the answer, or another target and foil."
            )

        def restored_fraction(values: torch.Tensor) -> list[float]:
            return ((values - corrupted.value) / (clean.value - corrupted.value)).tolist()

        restored = [
            restored_fraction(run_from(view, setup, layer, with_clean_positions(below, clean.stream[layer])))
            for layer, below in enumerate(corrupted.stream)
        ]
        one_token = setup.corrupted.ids.shape[1] == 1  # no prefix to keep
        prefix = prefix_cache(view, setup.corrupted.ids) if t.kind == DECODER and not one_token else None
        heads = [
            restored_fraction(head_runs(view, setup, layer, corrupted, mixed, prefix))
            for layer, mixed in enumerate(clean.mixed)
        ]
    pair, s = setup.pair, setup.similarity
    return {
        "tokens": setup.clean.tokens,
        "corrupted_tokens": setup.corrupted.tokens,
        "layers": t.layers,
        "restored": restored,
        "heads": heads,
        "clean_diff": clean.value,
        "corrupted_diff": corrupted.value,
        "target": word_text(t, pair.target_id) if pair else s.compare_with,
        "foil": (word_text(t, pair.foil_id) if pair else s.rather_than),
        "measure": setup.measure_name,
        "position": setup.position,
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
        title=f"Share of {result['measure']} restored by patching one cell",
        cmap="RdBu_r",
        vmin=-1.0,
        vmax=1.0,
        value_label="restored (100% = the clean answer)",
    )


def head_figure(t: Transformer, result: dict) -> Image.Image:
    if result["position"] is None:
        where = "every position (the sentence embedding reads them all)"
    else:
        where = "the last position" if t.kind == DECODER else "the mask"
    return heatmap(
        result["heads"],
        [f"layer {i}" for i in range(1, result["layers"] + 1)],
        [f"head {h}" for h in range(1, t.heads + 1)],
        "layer",
        "head",
        title=f"One head's output patched, at {where}",
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
