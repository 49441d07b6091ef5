"""One row of one attention head recomputed by hand from the model's own weights: q·k, the scale, the mask, the
softmax, side by side with the row the library returns."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hub.checks import check_int
from hub.inside import DECODER, Transformer, check_layer, forward, tokenize


def readable(t: Transformer, tokens: list[str]) -> list[str]:
    if not t.is_gpt2:
        return tokens
    return [t.tokenizer.convert_tokens_to_string([token]).replace(" ", "␣").replace("\n", "⏎") for token in tokens]


# The table's columns; the empty table shows them before a run.
STEP_COLUMNS = ["key token", "q·k", "÷ √d", "after the mask", "softmax", "library's weight"]


@dataclass
class StepByStep:
    table: pd.DataFrame  # one row per key token: q·k, scaled, masked, softmax
    scale: float  # what q·k is multiplied by: 1/sqrt(head size)
    scores: np.ndarray  # q·k for every key, float32
    weights: np.ndarray  # our softmax row, float32
    library_row: np.ndarray  # the row the model itself returned (in the model's dtype, shown as float32)
    largest_difference: float  # between our softmax and the library's row
    model_dtype: str  # "float32", "bfloat16", ...: the library's row carries this dtype's rounding


def linear32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A linear layer (nn.Linear, or GPT-2's Conv1D with its weight stored transposed) applied in float32 with its own
    weights upcast: exact copies of bf16 or fp16 values, so the arithmetic is the only thing that changes."""
    weight, bias = layer.weight.float(), layer.bias.float()
    return x @ weight + bias if isinstance(layer, Conv1D) else torch.nn.functional.linear(x, weight, bias)


def step_by_step(t: Transformer, text: str, layer: int, head: int, query: int) -> StepByStep:
    """Recompute one row of one head from the model's own weights: q·k for every key, scaled by 1/sqrt(d),
    the causal mask (decoder), the softmax; then compare with the row the library returns. The recomputation runs
    in float32 whatever the model's dtype, so a bf16 model's table shows the exact steps, and the difference from
    the library's row is the model's own rounding."""
    layer, head = check_layer(t, layer), check_int(head, "Head", 1, t.heads)
    tokens = tokenize(t, text)
    query = check_int(query, "Token", 1, len(tokens.tokens)) - 1
    outputs = forward(t, tokens.ids, hidden_states=True)
    # entry 0 = the embeddings, entry L-1 = the input of block L: what the model computed, upcast exactly
    block_input = outputs.hidden_states[layer - 1].float()
    block, d, lo = t.blocks[layer - 1], t.head_size, (head - 1) * t.head_size
    with torch.inference_mode():
        if t.is_gpt2:  # pre-norm: the block normalises its input, then one matrix makes q, k and v
            norm = block.ln_1
            normed = torch.nn.functional.layer_norm(
                block_input, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps
            )
            q, k, _ = linear32(block.attn.c_attn, normed).split(t.width, dim=2)
            scale = block.attn.scaling
        else:  # post-norm: the attention reads the previous layer's output as it is
            attention_layer = block.attention.self
            q, k = linear32(attention_layer.query, block_input), linear32(attention_layer.key, block_input)
            scale = attention_layer.scaling
        q_row, keys = q[0, query, lo : lo + d], k[0, :, lo : lo + d]
        scores = keys @ q_row
        scaled = scores * scale
        masked = scaled.clone()
        if t.kind == DECODER:
            masked[query + 1 :] = float("-inf")  # a decoder token may not look at later tokens
        softmax = torch.softmax(masked, dim=0)
    library_row = outputs.attentions[layer - 1][0, head - 1, query].float()
    columns = [
        readable(t, tokens.tokens),
        [f"{v:.4f}" for v in scores.numpy()],
        [f"{v:.4f}" for v in scaled.numpy()],
        ["−∞ (masked)" if np.isinf(v) else f"{v:.4f}" for v in masked.numpy()],
        [f"{100 * p:.1f}%" for p in softmax.numpy()],
        [f"{100 * p:.1f}%" for p in library_row.numpy()],
    ]
    table = pd.DataFrame(dict(zip(STEP_COLUMNS, columns)))
    difference = float((softmax - library_row).abs().max())
    dtype = str(t.model.dtype).removeprefix("torch.")
    return StepByStep(table, float(scale), scores.numpy(), softmax.numpy(), library_row.numpy(), difference, dtype)


def difference_note(step: StepByStep) -> str:
    """The sentence on the difference from the library's row: tiny in float32; in a 16-bit model, the rounding."""
    said = f"Largest difference from the library's own row: **{100 * step.largest_difference:.1e} percentage points**"
    if step.model_dtype == "float32":
        return said + " (float32 rounding)."
    bits = {"bfloat16": 8, "float16": 11}.get(step.model_dtype)
    precision = f" keeps {bits} significant bits (about {bits * 0.3:.0f} decimal digits)" if bits else ""
    return (
        f"{said}. The model runs in {step.model_dtype}, which{precision}: the library's row carries that rounding, "
        "while this table is computed in float32 from the same weights."
    )
