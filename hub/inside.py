"""What the views inside the models (attention, layers, positional encoding) share: the encoder and the decoder
they look into, a view of a loaded model that returns its attention weights, and checks on tokens, layers and heads.

The views read the very models the task tabs load (text generation's decoder, fill-mask's encoder), never a copy.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from hub import tiny
from hub.checks import check_choice, check_int, check_text, check_unicode, use_model_mask
from hub.errors import HubError, ModelUnavailableError
from hub.models import ModelStore, tiny_model_is_built, weight_sharing_copy

ENCODER, DECODER, OFFLINE_ENCODER = "encoder", "decoder", "minilm"
MODELS = (ENCODER, DECODER, OFFLINE_ENCODER)
# Which demo's loaded model each choice reads.
STORE_IDS = {DECODER: "text-generation", ENCODER: "fill-mask", OFFLINE_ENCODER: "minilm"}
MAX_TOKENS = 64  # a 64 x 64 attention map is about the most a screen (or a slide) shows readably
MAX_CHARS = 2_000


@dataclass
class Transformer:
    """A loaded GPT-2 or BERT, seen from inside. `model` runs eager attention and shares the loaded weights."""

    kind: str  # "encoder" (every token sees every token) or "decoder" (each token sees only earlier ones)
    name: str  # where the weights come from: a Hub id or a folder
    model: PreTrainedModel  # GPT2LMHeadModel, BertForMaskedLM, or a bare BertModel (MiniLM)
    tokenizer: PreTrainedTokenizerBase
    notice: str = ""  # said to the person, e.g. that MiniLM stands in for a BERT that could not be loaded

    @property
    def is_gpt2(self) -> bool:
        return self.model.config.model_type == "gpt2"

    @property
    def body(self) -> nn.Module:
        """The stack without its head: GPT-2's `transformer`, BERT's `bert` (a bare BertModel is its own body)."""
        return getattr(self.model, "transformer", None) or getattr(self.model, "bert", None) or self.model

    @property
    def blocks(self) -> nn.ModuleList:
        return self.body.h if self.is_gpt2 else self.body.encoder.layer

    @property
    def layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def heads(self) -> int:
        return self.model.config.num_attention_heads

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def head_size(self) -> int:
        return self.width // self.heads

    @property
    def position_table(self) -> torch.Tensor:
        """The learned position embeddings: one row per position the model can read."""
        return (self.body.wpe if self.is_gpt2 else self.body.embeddings.position_embeddings).weight

    def output_projection(self, layer: int) -> nn.Linear | nn.Module:
        """The linear layer that mixes the heads' outputs back into the residual stream (layer counted from 1)."""
        block = self.blocks[layer - 1]
        return block.attn.c_proj if self.is_gpt2 else block.attention.output.dense

    def word_head(self) -> nn.Module | None:
        """What turns a hidden state into a score per vocabulary word (None for an encoder without one, e.g. MiniLM).
        GPT-2's hidden states before the last block's output still need the final norm: see `layer_logits`."""
        if self.is_gpt2:
            return self.model.lm_head
        return getattr(self.model, "cls", None)


SUPPORTED = ("gpt2", "bert")


def attention_view(model: PreTrainedModel) -> PreTrainedModel:
    """A second module tree over the *same* weight tensors (nothing is copied), set to eager attention.

    transformers 5 runs sdpa by default, which returns no attention weights; switching the shared model to eager
    would slow text generation and race with it. Hooks set on the view (to switch heads off) stay on the view."""
    view = weight_sharing_copy(model)
    view.set_attn_implementation("eager")
    return view.eval()


_views: dict[int, PreTrainedModel] = {}


def shared_attention_view(model: PreTrainedModel) -> PreTrainedModel:
    """The attention view of a loaded model, made once (the loaded models live as long as the server)."""
    if id(model) not in _views:
        _views[id(model)] = attention_view(model)
    return _views[id(model)]


def load_transformer(store: ModelStore, which: Any, on_load=None) -> Transformer:
    """The encoder or decoder the task tabs loaded (loading it on first use). Where BERT cannot be had (offline),
    the encoder is all-MiniLM-L6-v2, a real pretrained encoder of BERT's architecture that ships in a package."""
    which = check_choice(which, "Model", MODELS)
    notice = ""
    try:
        loaded = store.get(STORE_IDS[which], on_load=on_load)
    except ModelUnavailableError as error:
        if which != ENCODER:
            raise
        loaded = store.get(STORE_IDS[OFFLINE_ENCODER], on_load=on_load)
        notice = f"{error} Showing all-MiniLM-L6-v2 instead: a real pretrained encoder of BERT's architecture."
        which = OFFLINE_ENCODER
    model = loaded.model
    if model.config.model_type not in SUPPORTED:
        raise HubError(
            f"The views inside the model read GPT-2 and BERT architectures; {store.source(STORE_IDS[which])} is "
            f"a {model.config.model_type} model."
        )
    kind = DECODER if which == DECODER else ENCODER
    return Transformer(kind, store.source(STORE_IDS[which]), shared_attention_view(model), loaded.tokenizer, notice)


@dataclass
class Tokens:
    ids: torch.Tensor  # shape (1, n)
    tokens: list[str]  # the model's own tokens, special tokens included, in order
    text: str  # the text as the model read it (fill-mask spellings written as the model's mask)


def tokenize(t: Transformer, text: Any, max_tokens: int = MAX_TOKENS) -> Tokens:
    """The text exactly as typed (GPT-2 reads spaces), with [MASK]/<mask>/___ as the encoder's mask, at most
    `max_tokens` tokens."""
    check_text(text, "Text", MAX_CHARS)  # refuses blank, too long, non-text and broken Unicode; the text stays as typed
    if t.kind == ENCODER and t.tokenizer.mask_token:
        text = use_model_mask(text, t.tokenizer.mask_token)
    ids = t.tokenizer(text, return_tensors="pt").input_ids
    if ids.shape[1] > max_tokens:
        raise HubError(f"Text is {ids.shape[1]} tokens long; these views read at most {max_tokens}. Shorten it.")
    if ids.shape[1] == 0:
        raise HubError("Text has no tokens for this model.")
    return Tokens(ids.to(t.model.device), t.tokenizer.convert_ids_to_tokens(ids[0]), text)


def check_layer(t: Transformer, layer: Any) -> int:
    return check_int(layer, "Layer", 1, t.layers)


def check_head(t: Transformer, head: Any) -> int:
    """A head from 1 to the number of heads, or 0 for the mean over heads."""
    return check_int(head, "Head (0 = the mean over heads)", 0, t.heads)


def parse_heads(t: Transformer, heads: Any) -> list[tuple[int, int]]:
    """ "1.3, 5.7" -> [(1, 3), (5, 7)]: layer 1 head 3 and layer 5 head 7, counted from 1."""
    if heads is None:
        heads = ""
    if not isinstance(heads, str):
        raise HubError("Heads must be text such as 1.3, 5.7 (layer.head).")
    check_unicode(heads, "Heads")
    if len(heads) > 5_000:
        raise HubError("Heads: the list is too long.")
    chosen = []
    for item in heads.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        layer, dot, head = item.partition(".")
        # only the digits 0-9: str.isdigit also accepts superscripts and other scripts' digits, which int() refuses
        if not dot or not all(part.strip().isascii() and part.strip().isdigit() for part in (layer, head)):
            raise HubError(f"Heads: {item[:80]!r} is not layer.head (for example 1.3 = layer 1, head 3).")
        if len(layer.strip()) > 6 or len(head.strip()) > 6:
            raise HubError(f"Heads: {item[:80]}... does not exist; this model has layers 1-{t.layers}.")
        layer, head = int(layer), int(head)
        if not 1 <= layer <= t.layers or not 1 <= head <= t.heads:
            raise HubError(
                f"Heads: {item} does not exist; this model has layers 1-{t.layers} and heads 1-{t.heads} in each."
            )
        if (layer, head) not in chosen:
            chosen.append((layer, head))
    return chosen


def forward(t: Transformer, ids: torch.Tensor, attentions: bool = True, hidden_states: bool = False) -> Any:
    with torch.inference_mode():
        return t.model(input_ids=ids, output_attentions=attentions, output_hidden_states=hidden_states)


# ---------------------------------------------------------------------------------------------------------
# The sliders' ranges before a model is loaded

BASE_SHAPE = (12, 12)  # GPT-2's and BERT-base's layers and heads: for a model whose config is not on this machine yet


def configured_layers_and_heads(
    store: ModelStore, demo_id: str, resolve: Callable[[str], str] = str
) -> tuple[int, int] | None:
    """(layers, heads per layer) of a demo's transformers model from its config alone, where that is on this machine
    (a folder, the Hub cache, or the tiny preset's recipe before it is built): nothing loads and nothing downloads, so
    a tab sizes its sliders before the first run (a run then sets them from the loaded model). `resolve` turns the
    source into the folder the demo loads from (the fine-tune backbone's packaged MiniLM). None where no config says."""
    source = store.source(demo_id)
    if store.builds_tiny(demo_id) and not tiny_model_is_built(Path(source)):
        return tiny.LAYERS, tiny.HEADS
    try:
        config = AutoConfig.from_pretrained(resolve(source), local_files_only=True)
        return int(config.num_hidden_layers), int(config.num_attention_heads)
    except Exception:  # not downloaded yet, or not a transformers model: the loaded model tells after a run
        return None
