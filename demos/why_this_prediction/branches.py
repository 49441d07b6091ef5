"""What else it could have said: one prompt at several temperatures (or seeds) side by side, where the texts part,
each token's alternatives, and branches that continue the text from a chosen alternative."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList, set_seed

from hub.checks import check_int, check_number, check_text
from hub.errors import HubError

MAX_RUNS = 6
MAX_NEW_TOKENS = 64
MAX_PROMPT_TOKENS = 256
MAX_PREFIX_TOKENS = 512
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**31 - 1
TOP_ALTERNATIVES = 10


@dataclass
class Decoder:
    """The text-generation model as loaded (its fast attention; generation only reads it)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def check_temperatures(temperatures: Any) -> list[float]:
    if isinstance(temperatures, int | float) and not isinstance(temperatures, bool):
        temperatures = [temperatures]
    if not isinstance(temperatures, list | tuple) or not temperatures:
        raise HubError(f"Temperatures must be a list of 1 to {MAX_RUNS} numbers, e.g. [0, 0.7, 1.2].")
    if len(temperatures) > MAX_RUNS:
        raise HubError(f"Temperatures: at most {MAX_RUNS} runs side by side, got {len(temperatures)}.")
    return [check_number(value, "Temperature", 0.0, MAX_TEMPERATURE) for value in temperatures]


def check_prompt(decoder: Decoder, prompt: Any, max_new_tokens: int) -> torch.Tensor:
    check_text(prompt, "Prompt", 2_000)
    ids = decoder.tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise HubError("Prompt has no tokens for this model.")
    if ids.shape[1] > MAX_PROMPT_TOKENS:
        raise HubError(f"Prompt is {ids.shape[1]} tokens long; this view reads at most {MAX_PROMPT_TOKENS}.")
    return ids.to(decoder.model.device)


def sampling_settings(temperature: float) -> dict:
    """Temperature 0 = greedy: always the most probable token. Otherwise plain sampling at that temperature (no top-k
    or top-p cut, so what the model's probabilities allow is what can come out)."""
    if temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}


class _Stop(StoppingCriteria):
    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


def generate(
    decoder: Decoder,
    ids: torch.Tensor,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[int]:
    """`model.generate` with these settings, seeded; the new token ids."""
    set_seed(seed)
    with torch.inference_mode():
        out = decoder.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            pad_token_id=decoder.tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_Stop(should_stop)]),
            **sampling_settings(temperature),
        )
    return out[0, ids.shape[1] :].tolist()


def shared_prefix(a: list, b: list) -> int:
    """How many leading items two lists share: the index where they part (their length if one starts the other)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def run_answer(decoder: Decoder, new_ids: list[int]) -> dict:
    return {
        "text": decoder.tokenizer.decode(new_ids, skip_special_tokens=True),
        "tokens": decoder.tokenizer.convert_ids_to_tokens(new_ids),
    }


def branches(
    decoder: Decoder,
    prompt: Any,
    temperatures: Any = (0.0, 0.7, 1.2),
    max_new_tokens: Any = 24,
    seed: Any = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """The prompt continued at each temperature with the same seed; diverge_at[i] = the first new token where run i
    differs from the first run (its length where it never does)."""
    temperatures = check_temperatures(temperatures)
    max_new_tokens = check_int(max_new_tokens, "Max new tokens", 1, MAX_NEW_TOKENS)
    seed = check_int(seed, "Seed", 0, MAX_SEED)
    ids = check_prompt(decoder, prompt, max_new_tokens)
    runs, new = [], []
    for temperature in temperatures:
        new.append(generate(decoder, ids, temperature, max_new_tokens, seed, should_stop))
        runs.append({"temperature": temperature, **run_answer(decoder, new[-1])})
    return {"runs": runs, "diverge_at": [shared_prefix(new[0], other) for other in new]}


def seed_runs(
    decoder: Decoder, prompt: Any, temperature: Any, seeds: Any, max_new_tokens: Any = 24
) -> dict:  # the same prompt and temperature, several seeds
    temperature = check_number(temperature, "Temperature", 0.0, MAX_TEMPERATURE)
    if not isinstance(seeds, list | tuple) or not 1 <= len(seeds) <= MAX_RUNS:
        raise HubError(f"Seeds must be a list of 1 to {MAX_RUNS} whole numbers.")
    seeds = [check_int(seed, "Seed", 0, MAX_SEED) for seed in seeds]
    max_new_tokens = check_int(max_new_tokens, "Max new tokens", 1, MAX_NEW_TOKENS)
    ids = check_prompt(decoder, prompt, max_new_tokens)
    new = [generate(decoder, ids, temperature, max_new_tokens, seed) for seed in seeds]
    runs = [{"seed": seed, "temperature": temperature, **run_answer(decoder, n)} for seed, n in zip(seeds, new)]
    return {"runs": runs, "diverge_at": [shared_prefix(new[0], other) for other in new]}


def token_ids(decoder: Decoder, tokens: Any, name: str) -> list[int]:
    """Model tokens as /branches lists them ("ĠParis") -> their ids."""
    if tokens is None:
        return []
    if not isinstance(tokens, list | tuple) or len(tokens) > MAX_PREFIX_TOKENS:
        raise HubError(f"{name} must be a list of at most {MAX_PREFIX_TOKENS} tokens as /branches returns them.")
    vocab = decoder.tokenizer.get_vocab()
    ids = []
    for token in tokens:
        if not isinstance(token, str) or token not in vocab:
            shown = token if isinstance(token, str) else repr(token)
            raise HubError(
                f"{name}: {shown[:60]!r} is not one of the model's tokens (use the tokens /branches returns)."
            )
        ids.append(vocab[token])
    return ids


def alternatives(decoder: Decoder, prompt: Any, prefix_tokens: Any, top: int = TOP_ALTERNATIVES) -> list[dict]:
    """The model's most probable next tokens after the prompt and these generated tokens."""
    prefix = token_ids(decoder, prefix_tokens, "Prefix tokens")
    ids = check_prompt(decoder, prompt, 1)
    ids = torch.cat([ids, torch.tensor([prefix], dtype=ids.dtype, device=ids.device)], 1) if prefix else ids
    with torch.inference_mode():
        probs = decoder.model(input_ids=ids).logits[0, -1].float().softmax(-1)
    values, top_ids = probs.topk(top)
    tokens = decoder.tokenizer.convert_ids_to_tokens(top_ids.tolist())
    return [
        {"token": token, "text": decoder.tokenizer.decode([i]), "probability": p}
        for token, i, p in zip(tokens, top_ids.tolist(), values.tolist())
    ]


def continue_from(
    decoder: Decoder,
    prompt: Any,
    prefix_tokens: Any,
    alternative: Any,
    max_new_tokens: Any = 24,
    seed: Any = 0,
    temperature: Any = 0.7,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """The prompt, the kept tokens, the chosen alternative, and then what the model writes after it."""
    max_new_tokens = check_int(max_new_tokens, "Max new tokens", 1, MAX_NEW_TOKENS)
    seed = check_int(seed, "Seed", 0, MAX_SEED)
    temperature = check_number(temperature, "Temperature", 0.0, MAX_TEMPERATURE)
    prefix = token_ids(decoder, prefix_tokens, "Prefix tokens")
    (chosen,) = token_ids(decoder, [alternative], "Alternative")
    ids = check_prompt(decoder, prompt, max_new_tokens)
    kept = prefix + [chosen]
    context = getattr(decoder.model.config, "n_positions", None) or decoder.model.config.max_position_embeddings
    if ids.shape[1] + len(kept) + max_new_tokens > context:
        raise HubError(f"Prompt, kept tokens and new tokens must fit the model's {context} positions.")
    start = torch.cat([ids, torch.tensor([kept], dtype=ids.dtype, device=ids.device)], 1)
    new = generate(decoder, start, temperature, max_new_tokens, seed, should_stop)
    return {"branch_at": len(prefix), "temperature": temperature, **run_answer(decoder, kept + new)}


def is_greedy(temperature: float) -> bool:
    return math.isclose(temperature, 0.0)


def branches_code(source: str, prompt: str, temperatures: list[float], max_new_tokens: int, seed: int,
                  dtype: torch.dtype) -> str:  # fmt: skip
    """Library code that prints the same runs: plain `generate` with the same settings and seed."""
    return f"""import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

tokenizer = AutoTokenizer.from_pretrained({source!r})
model = AutoModelForCausalLM.from_pretrained({source!r}, dtype={dtype}).eval()
inputs = tokenizer({prompt!r}, return_tensors="pt")
for temperature in {temperatures!r}:
    # temperature 0 = greedy; otherwise plain sampling (no top-k, no top-p)
    settings = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    set_seed({seed})
    out = model.generate(**inputs, max_new_tokens={max_new_tokens}, pad_token_id=tokenizer.eos_token_id, **settings)
    print(temperature, tokenizer.convert_ids_to_tokens(out[0, inputs.input_ids.shape[1]:]))
"""
