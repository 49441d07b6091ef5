"""Sparse attention: the same text read by GPT-2 with its full causal attention and with sparse masks, each applied
as a 4-D attention mask to the real model (transformers passes a 4-D mask to every layer as it is), and the cost
of attention as the text grows: every score of an n x n matrix against a kernel that computes only a band."""

import math
import time

import torch
import torch.nn.functional as F

from demos.efficient_attention.decoder import context, token_ids
from demos.language.text_generation import TextGenerator
from hub.checks import check_choice, check_int
from hub.jobs import Job

PATTERNS = ("sliding_window", "strided", "window_global")
PATTERN_NAMES = {
    "full": "full causal",
    "sliding_window": "sliding window",
    "strided": "strided",
    "window_global": "window + global",
}
GLOBAL_TOKENS = 2  # window_global: the first tokens every token may read (the "global" tokens)
MAX_TOKENS = 256  # the mask is returned as an n x n list and drawn cell by cell
MAX_WINDOW = 256
DEFAULT_WINDOW = 8
TIMING_REPEATS = 3


def pattern_mask(pattern: str, n: int, window: int) -> torch.Tensor:
    """(n, n) booleans, True where query i (row) may read key j (column); always causal (j <= i), and every token
    reads itself, so no row is empty.

    sliding_window: the last `window` tokens (i - window < j <= i).
    strided (Child et al. 2019): the last `window` tokens, and every `window`-th token before them ((i - j) % window == 0).
    window_global (Longformer, BigBird): the last `window` tokens, and the first GLOBAL_TOKENS tokens of the text.
    full: every earlier token."""
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    distance = i - j
    causal = distance >= 0
    local = causal & (distance < window)
    if pattern == "full":
        return causal
    if pattern == "sliding_window":
        return local
    if pattern == "strided":
        return local | (causal & (distance % window == 0))
    if pattern == "window_global":
        return local | (causal & (j < GLOBAL_TOKENS))
    raise ValueError(pattern)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (1, 1, n, n) mask GPT-2's attention adds to its scores: 0 where allowed, the dtype's lowest value where
    not (so softmax gives those keys no weight)."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)[None, None]


def perplexity(generator: TextGenerator, ids: torch.Tensor, mask: torch.Tensor | None) -> float:
    """exp(mean next-token loss) of the text, read with this mask (None = the model's own causal attention)."""
    model = generator.model
    kwargs = {} if mask is None else {"attention_mask": additive_mask(mask, model.dtype).to(model.device)}
    with torch.inference_mode():
        logits = model(input_ids=ids, **kwargs).logits[0, :-1].float()
    return math.exp(F.cross_entropy(logits, ids[0, 1:]).item())


def check_inputs(generator: TextGenerator, text, pattern, window) -> tuple[torch.Tensor, str, int]:
    pattern = check_choice(pattern, "Pattern", PATTERNS)
    window = check_int(window, "Window", 1, MAX_WINDOW)
    ids = token_ids(generator, text, min(MAX_TOKENS, context(generator)), min_tokens=2)  # a loss needs a next token
    return ids, pattern, window


def sparse_attention(generator: TextGenerator, text: str, pattern: str = "sliding_window",
                     window: int = DEFAULT_WINDOW) -> dict:  # fmt: skip
    """The text's perplexity with full causal attention and with the pattern's mask, the mask itself and how many
    query-key scores it needs (per head and layer)."""
    ids, pattern, window = check_inputs(generator, text, pattern, window)
    n = ids.shape[1]
    mask = pattern_mask(pattern, n, window)
    return {
        "pattern": pattern,
        "window": window,
        "perplexity_full": perplexity(generator, ids, None),
        "perplexity_sparse": perplexity(generator, ids, mask),
        "mask": mask.int().tolist(),
        "scores_computed": int(mask.sum()),
        "scores_full": n * (n + 1) // 2,  # the causal pairs full attention needs (a dense kernel computes n^2)
        "tokens": generator.tokenizer.convert_ids_to_tokens(ids[0].tolist()),
    }


def every_pattern(generator: TextGenerator, text: str, window: int) -> dict:
    """The perplexity under full attention and under each pattern at this window, for the tab's side-by-side."""
    ids, _, window = check_inputs(generator, text, PATTERNS[0], window)
    n = ids.shape[1]
    masks = {"full": pattern_mask("full", n, window)} | {p: pattern_mask(p, n, window) for p in PATTERNS}
    return {
        name: {
            "mask": mask,
            "perplexity": perplexity(generator, ids, None if name == "full" else mask),
            "scores": int(mask.sum()),
        }  # fmt: skip
        for name, mask in masks.items()
    }


# ---------------------------------------------------------------------------------------------------------
# What a mask saves: only a kernel that skips the masked scores is faster


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GPT-2's eager attention: all n x n scores, then the mask. q, k, v: (heads, n, head size)."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1) @ v


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """The same result as dense_attention with the sliding-window mask, computing only a band: the queries in
    blocks of `window`, each block scoring its own keys and the block before (2 x window keys per query, as in
    Longformer's and BigBird's block kernels), never the n x n matrix."""
    heads, n, d = q.shape
    w = min(window, n)  # a window past the text's length is the whole causal triangle
    blocks = -(-n // w)
    pad = blocks * w - n
    q_blocks = F.pad(q, (0, 0, 0, pad)).view(heads, blocks, w, d)
    k_bands = F.pad(k, (0, 0, w, pad)).unfold(1, 2 * w, w)  # (heads, blocks, d, 2w): the keys at i - w .. i + w - 1
    v_bands = F.pad(v, (0, 0, w, pad)).unfold(1, 2 * w, w).transpose(-1, -2)
    scores = (q_blocks @ k_bands) / math.sqrt(d)  # (heads, blocks, w, 2w)
    query = (torch.arange(blocks) * w)[:, None, None] + torch.arange(w)[None, :, None]
    key = (torch.arange(blocks) * w - w)[:, None, None] + torch.arange(2 * w)[None, None, :]
    allowed = (key >= 0) & (query - key >= 0) & (query - key < w)
    out = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1) @ v_bands
    return out.reshape(heads, blocks * w, d)[:, :n]


def first_layer_qkv(generator: TextGenerator, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The queries, keys and values of GPT-2's first attention layer for these tokens: (heads, n, head size)."""
    body = generator.model.transformer
    block = body.h[0]
    heads = generator.model.config.n_head
    with torch.inference_mode():
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = body.wte(ids[0]) + body.wpe(positions)
        q, k, v = block.attn.c_attn(block.ln_1(hidden)).split(generator.model.config.n_embd, dim=-1)
    return tuple(t.view(ids.shape[1], heads, -1).transpose(0, 1).float() for t in (q, k, v))


def timing_lengths(generator: TextGenerator) -> list[int]:
    """64, 128, ... up to the model's context."""
    return [2**p for p in range(6, 16) if 2**p <= context(generator)]


def attention_timing(generator: TextGenerator, text: str, window: int = DEFAULT_WINDOW,
                     job: Job | None = None) -> dict:  # fmt: skip
    """Milliseconds for one layer's attention (all heads, float32) as the text grows: the text's tokens repeated
    up to each length, read by the model's first layer; the dense n x n computation against the band. The best of
    TIMING_REPEATS runs each (the least disturbed by other work on the machine)."""
    window = check_int(window, "Window", 1, MAX_WINDOW)
    ids = token_ids(generator, text, min(MAX_TOKENS, context(generator)))
    lengths = timing_lengths(generator)
    longest = ids.repeat(1, -(-lengths[-1] // ids.shape[1]))[:, : lengths[-1]]
    q_all, k_all, v_all = first_layer_qkv(generator, longest)
    result = {"lengths": [], "ms_full": [], "ms_window": [], "scores_full": [], "scores_window": []}
    for n in lengths:
        if job is not None and job.should_stop():
            break
        q, k, v = q_all[:, :n], k_all[:, :n], v_all[:, :n]
        causal = pattern_mask("full", n, window)
        times = {"full": [], "window": []}
        with torch.inference_mode():
            for _ in range(TIMING_REPEATS):
                for name, run, args in (
                    ("full", dense_attention, causal),
                    ("window", sliding_window_attention, window),
                ):
                    start = time.perf_counter()
                    run(q, k, v, args)
                    times[name].append(1000 * (time.perf_counter() - start))
        w = min(window, n)
        result["lengths"].append(n)
        result["ms_full"].append(min(times["full"]))
        result["ms_window"].append(min(times["window"]))
        result["scores_full"].append(n * n)  # what the dense kernel computes, masked or not
        result["scores_window"].append(-(-n // w) * w * 2 * w)  # blocks x window queries x 2 window keys
    return result


def sparse_code(source: str, dtype, text: str, pattern: str, window: int) -> str:
    rule = {
        "sliding_window": "local",
        "strided": "local | (causal & (distance % window == 0))  # and every window-th token before",
        "window_global": f"local | (causal & (j < {GLOBAL_TOKENS}))  # and the first {GLOBAL_TOKENS} tokens",
    }[pattern]
    return f"""import math
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({source!r})
model = AutoModelForCausalLM.from_pretrained({source!r}, dtype={dtype}).eval()
ids = tokenizer({text!r}, return_tensors="pt").input_ids
n, window = ids.shape[1], {window}

i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]  # query (row), key (column)
distance = i - j
causal = distance >= 0
local = causal & (distance < window)  # the last `window` tokens, itself included
mask = {rule}
# A 4-D mask reaches every layer as it is; GPT-2 adds it to the scores: 0 = read, the lowest number = skip.
additive = torch.zeros(n, n, dtype=model.dtype).masked_fill(~mask, torch.finfo(model.dtype).min)[None, None]


def perplexity(**kwargs):  # exp(mean next-token loss)
    with torch.no_grad():
        logits = model(input_ids=ids, **kwargs).logits[0, :-1].float()
    return math.exp(F.cross_entropy(logits, ids[0, 1:]).item())


print("perplexity, full attention:", perplexity())
print("perplexity, {pattern}:", perplexity(attention_mask=additive))
print("scores computed:", int(mask.sum()), "of", n * (n + 1) // 2)
"""
