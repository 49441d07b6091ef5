"""KV cache: GPT-2 writes the same greedy text twice, once keeping every layer's keys and values (the cache) and
once recomputing them for the whole text at every step (use_cache=False). Both runs are timed token by token, and
the cache's size is read from its own tensors after each step."""

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from demos.efficient_attention.decoder import MEGABYTE, context, token_ids
from demos.language.text_generation import TextGenerator
from hub.checks import check_int
from hub.errors import HubError
from hub.jobs import Job

MAX_NEW_TOKENS = 128  # without the cache step t reads the whole text again: the cost grows with the square
MAX_PROMPT_TOKENS = 128
DEFAULT_NEW_TOKENS = 48


def cache_megabytes(cache: DynamicCache) -> float:
    """What the cache holds now, in MB: every layer's key and value tensors, as stored."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
               if t is not None) / MEGABYTE  # fmt: skip


class StepClock(StoppingCriteria):
    """Called by `generate` once each new token is chosen: the time since the last token (the first one includes
    reading the prompt), the cache's size at that moment, and the job's stop switch."""

    def __init__(self, job: Job | None, cache: DynamicCache | None):
        self.job, self.cache = job, cache
        self.ms: list[float] = []
        self.mb: list[float] = []
        self.last = time.perf_counter()

    def start(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        now = time.perf_counter()
        self.ms.append(1000 * (now - self.last))
        if self.cache is not None:
            self.mb.append(cache_megabytes(self.cache))
        stop = self.job is not None and self.job.should_stop()
        self.last = time.perf_counter()  # the size reading above is not counted in the next token's time
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@dataclass
class Run:
    new_ids: list[int]
    ms: list[float]
    mb: list[float] = field(default_factory=list)


def greedy_run(generator: TextGenerator, ids: torch.Tensor, new_tokens: int, use_cache: bool, job: Job | None) -> Run:
    model = generator.model
    cache = DynamicCache(config=model.config) if use_cache else None
    clock = StepClock(job, cache)
    kwargs = {"past_key_values": cache} if use_cache else {}
    with torch.inference_mode():
        clock.start()
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=generator.tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([clock]),
            **kwargs,
        )
    return Run(output[0, ids.shape[1] :].tolist(), clock.ms, clock.mb)


def check_new_tokens(generator: TextGenerator, new_tokens, prompt_tokens: int) -> int:
    new_tokens = check_int(new_tokens, "New tokens", 1, MAX_NEW_TOKENS)
    if prompt_tokens + new_tokens > context(generator):
        raise HubError(
            f"The text ({prompt_tokens} tokens) plus {new_tokens} new tokens do not fit the model's context of "
            f"{context(generator)} positions."
        )
    return new_tokens


def kv_cache(generator: TextGenerator, text: str, new_tokens: int = DEFAULT_NEW_TOKENS, job: Job | None = None) -> dict:
    """Both runs, in turns: with the cache, then without. Each list has one entry per new token; position = the
    index of that token in the whole text (the prompt's tokens are positions 0 to n-1)."""
    ids = token_ids(generator, text, min(MAX_PROMPT_TOKENS, context(generator) - 1))
    new_tokens = check_new_tokens(generator, new_tokens, ids.shape[1])
    cached = greedy_run(generator, ids, new_tokens, True, job)
    if job is not None and job.should_stop():
        raise HubError(stopped_message(job))
    uncached = greedy_run(generator, ids, new_tokens, False, job)
    if job is not None and job.should_stop() and len(uncached.new_ids) < len(cached.new_ids):
        raise HubError(stopped_message(job))
    n = ids.shape[1]
    decode = generator.tokenizer.decode
    return {
        "positions": [n + i for i in range(len(cached.new_ids))],
        "ms_per_token_cached": cached.ms,
        "ms_per_token_uncached": uncached.ms,
        "cache_mb": cached.mb,
        "same_text": cached.new_ids == uncached.new_ids,
        "text_cached": decode(cached.new_ids),
        "text_uncached": decode(uncached.new_ids),
        "prompt_tokens": n,
        "dtype": str(generator.model.dtype).removeprefix("torch."),
    }


def stopped_message(job: Job) -> str:
    return "The time limit ran out before both runs ended." if job.out_of_time() else "Stopped before both runs ended."


def cache_code(source: str, dtype: torch.dtype, text: str, new_tokens: int) -> str:
    return f"""import time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StoppingCriteria

tokenizer = AutoTokenizer.from_pretrained({source!r})
model = AutoModelForCausalLM.from_pretrained({source!r}, dtype={dtype}).eval()
ids = tokenizer({text!r}, return_tensors="pt").input_ids


class Clock(StoppingCriteria):  # called once per new token: its time, and the cache's size in MB
    def __init__(self, cache):
        self.cache, self.ms, self.mb, self.last = cache, [], [], time.perf_counter()

    def __call__(self, input_ids, scores, **kwargs):
        self.ms.append(1000 * (time.perf_counter() - self.last))
        if self.cache is not None:
            tensors = [t for layer in self.cache.layers for t in (layer.keys, layer.values)]
            self.mb.append(sum(t.numel() * t.element_size() for t in tensors) / 1e6)
        self.last = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


runs = {{}}
for use_cache in (True, False):
    cache = DynamicCache(config=model.config) if use_cache else None
    clock = Clock(cache)
    extra = {{"past_key_values": cache}} if use_cache else {{}}
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens={new_tokens}, do_sample=False,
                             use_cache=use_cache, pad_token_id=tokenizer.eos_token_id, stopping_criteria=[clock], **extra)
    runs[use_cache] = (out[0, ids.shape[1]:].tolist(), clock)

print("same text:", runs[True][0] == runs[False][0])
print("ms per token, cached:", [round(ms, 1) for ms in runs[True][1].ms])
print("ms per token, uncached:", [round(ms, 1) for ms in runs[False][1].ms])
print("cache MB:", [round(mb, 4) for mb in runs[True][1].mb])
"""
