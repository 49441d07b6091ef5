"""Efficient transformers: three ways to make GPT-2 cheaper, each measured live on the loaded model.

decoder.py   the text-generation tab's GPT-2, shared, and the text as token ids
kv_cache.py  greedy generation with and without the KV cache: time per token, the cache's size
sparse.py    sparse attention masks on the real model: perplexity, and the cost of a banded kernel
quantize.py  float32, bfloat16 and int8 copies: size, speed, top 5, agreement
figures.py   the figures and tables
tab.py       the tab and its endpoints /kv_cache, /sparse_attention and /quantize
"""

from demos.efficient_attention.kv_cache import cache_megabytes, kv_cache
from demos.efficient_attention.quantize import int8_model, quantize, variants
from demos.efficient_attention.sparse import PATTERNS, additive_mask, pattern_mask, sparse_attention
from demos.efficient_attention.tab import DEMO

__all__ = [
    "DEMO",
    "PATTERNS",
    "additive_mask",
    "cache_megabytes",
    "int8_model",
    "kv_cache",
    "pattern_mask",
    "quantize",
    "sparse_attention",
    "variants",
]
