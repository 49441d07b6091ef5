"""The decoder the three views read: the text-generation tab's loaded GPT-2, shared, never changed in place."""

from typing import Any

import torch

from demos.language.text_generation import TextGenerator, context_of
from hub.checks import check_text
from hub.errors import HubError
from hub.models import ModelStore

DEMO_ID = "efficient-attention"
GENERATOR_ID = "text-generation"  # the demo whose loaded model these views read
MAX_CHARS = 5_000
MEGABYTE = 1e6  # sizes are in MB of 10^6 bytes


def load_decoder(store: ModelStore, on_load=None) -> TextGenerator:
    """The text-generation tab's model, loaded on first use; these views need GPT-2's architecture."""
    generator = store.get(GENERATOR_ID, on_load=on_load)
    if generator.model.config.model_type != "gpt2":
        raise HubError(
            f"The efficient-attention views read a GPT-2 model; {generator.source} is a "
            f"{generator.model.config.model_type} model."
        )
    return generator


def context(generator: TextGenerator) -> int:
    return context_of(generator.model.config)


def token_ids(generator: TextGenerator, text: Any, max_tokens: int, min_tokens: int = 1) -> torch.Tensor:
    """The text exactly as typed, as a (1, n) tensor of token ids, min_tokens <= n <= max_tokens."""
    check_text(text, "Text", MAX_CHARS)
    ids = generator.tokenizer(text, return_tensors="pt").input_ids
    n = ids.shape[1]
    if n > max_tokens:
        raise HubError(f"Text is {n} tokens long; this view reads at most {max_tokens}. Shorten it.")
    if n < min_tokens:
        raise HubError(f"Text is {n} token{'s' if n != 1 else ''} long; this view needs at least {min_tokens}.")
    return ids.to(generator.model.device)


def readable_token(generator: TextGenerator, token_id: int) -> str:
    return generator.tokenizer.decode([token_id])
