"""What the views of "Why this prediction" share: where a prediction is read (GPT-2's last position, BERT's mask),
a word typed by a person as one of the model's tokens, and a private view of a loaded model to hook."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from hub.checks import check_text, check_unicode
from hub.errors import HubError
from hub.inside import DECODER, Tokens, Transformer, attention_view, tokenize

TOP_WORDS = 10  # the alternatives a visitor can pick a target from


def require_word_head(t: Transformer) -> None:
    if t.word_head() is None:
        because = f"{t.notice} " if t.notice else ""
        raise HubError(
            f"{because}{t.name} has no word-prediction head, so there is no prediction to explain: pick the decoder "
            "(GPT-2) or BERT."
        )


def prediction_position(t: Transformer, tokens: Tokens, name: str = "Text") -> int:
    """Where the prediction is read: the decoder's last position (its next token), the encoder's first mask."""
    if t.kind == DECODER:
        return tokens.ids.shape[1] - 1
    masks = (tokens.ids[0] == t.tokenizer.mask_token_id).nonzero()
    if not len(masks):
        raise HubError(
            f"{name}: no mask found. The encoder predicts a hidden word: write {t.tokenizer.mask_token}, [MASK], "
            "<mask> or ___ where it goes."
        )
    return int(masks[0, 0])


def embedding_layer(t: Transformer, model: nn.Module | None = None) -> nn.Module:
    """The token embedding table (positions are added after it), in `model` (a view of t.model) or t.model."""
    return (model or t.model).get_input_embeddings()


def word_text(t: Transformer, token_id: int) -> str:
    """A token as text: GPT-2's "ĠParis" is " Paris"."""
    return t.tokenizer.decode([token_id])


def word_id(t: Transformer, word: Any, name: str) -> int:
    """The one token a typed word stands for: a model token as listed ("ĠParis", "##ing") or text that is exactly one
    token (" Paris"; BERT lower-cases)."""
    if not isinstance(word, str):
        raise HubError(f"{name} must be text (one token, e.g. one of the top {TOP_WORDS} words).")
    check_unicode(word, name)
    if not word or len(word) > 100:
        raise HubError(f"{name} must be one token, e.g. one of the top {TOP_WORDS} words; got {word[:100]!r}.")
    vocab = t.tokenizer.get_vocab()
    if word in vocab:
        return vocab[word]
    ids = t.tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == t.tokenizer.unk_token_id:
        raise HubError(
            f"{name} {word!r} is {len(ids)} tokens for this model, not one. Pick one token, e.g. one of the top "
            f"{TOP_WORDS} words (GPT-2 writes a leading space: ' Paris')."
        )
    return ids[0]


def scores_at(t: Transformer, position: int, **inputs: torch.Tensor) -> torch.Tensor:
    """(batch, vocabulary) scores at the prediction's position, float32. The decoder predicts at its last position
    and computes only that one's scores: GPT-2's word head is a third of its arithmetic. No run here continues, so
    none keeps a cache of keys and values."""
    if t.kind == DECODER:
        return t.model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1].float()
    return t.model(**inputs).logits[:, position].float()


def next_word_logits(t: Transformer, ids: torch.Tensor, position: int) -> torch.Tensor:
    """The model's scores for every word at `position` (float32, whatever dtype the model runs in)."""
    with torch.inference_mode():
        return scores_at(t, position, input_ids=ids)[0]


def top_words(t: Transformer, logits: torch.Tensor, k: int = TOP_WORDS) -> list[tuple[str, float]]:
    """The k most probable words at a position, as text with their probability."""
    values, ids = logits.softmax(-1).topk(k)
    return [(word_text(t, i), p) for p, i in zip(values.tolist(), ids.tolist())]


@dataclass
class Prediction:
    tokens: Tokens
    position: int
    logits: torch.Tensor  # (vocabulary,) at the position, float32


def read_tokens(t: Transformer, text: Any, name: str = "Text", max_tokens: int = 64) -> Tokens:
    """A text as the model's tokens; a message names the input it is about."""
    check_text(text, name, 2_000)
    try:
        return tokenize(t, text, max_tokens)
    except HubError as error:
        raise HubError(f"{name}: {error}") from None


def read_prediction(t: Transformer, text: Any, name: str = "Text", max_tokens: int = 64) -> Prediction:
    require_word_head(t)
    tokens = read_tokens(t, text, name, max_tokens)
    position = prediction_position(t, tokens, name)
    return Prediction(tokens, position, next_word_logits(t, tokens.ids, position))


_views: dict[int, tuple[nn.Module, threading.Lock]] = {}
_views_lock = threading.Lock()


@contextmanager
def hookable(t: Transformer) -> Iterator[Transformer]:
    """The model as a private view over the same weights, for one computation at a time: the hooks this tab sets
    (Captum's, patching's) never reach the loaded model that other tabs and visitors run."""
    with _views_lock:
        if id(t.model) not in _views:
            _views[id(t.model)] = (attention_view(t.model), threading.Lock())
        view, lock = _views[id(t.model)]
    with lock:
        yield replace(t, model=view)


def percent(p: float) -> str:
    return f"{100 * p:.2f}%"
