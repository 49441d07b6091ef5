"""Switching attention heads off: the prediction before and after, on the loaded encoder or decoder.
Part of the Attention tab (demos/attention/maps.py)."""

from dataclasses import replace

import gradio as gr
import torch
from transformers import PreTrainedModel

from hub.checks import check_int
from hub.errors import HubError
from hub.inside import DECODER, ENCODER, Transformer, attention_view, load_transformer, parse_heads, tokenize
from hub.models import ModelStore
from hub.ui import code_accordion, show_errors


def top_words(t: Transformer, probabilities: torch.Tensor, top_k: int) -> dict[str, float]:
    values, ids = probabilities.topk(top_k)
    words: dict[str, float] = {}
    for value, token_id in zip(values.tolist(), ids.tolist()):
        word = t.tokenizer.decode([token_id])
        words[word if word not in words else f"{word} (id {token_id})"] = value
    return words


def prediction(t: Transformer, model: PreTrainedModel, ids: torch.Tensor, top_k: int) -> dict[str, float]:
    """The decoder's next token, or the encoder's word for the first mask."""
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    if t.kind == DECODER:
        return top_words(t, logits[-1].softmax(-1), top_k)
    mask = int((ids[0] == t.tokenizer.mask_token_id).nonzero()[0, 0])
    return top_words(t, logits[mask].softmax(-1), top_k)


def switch_heads_off(t: Transformer, heads: list[tuple[int, int]]) -> PreTrainedModel:
    """A private view of the same weights in which the chosen heads say nothing: each head's slice of the input
    to the layer's output projection is zeroed, so the rest of the model runs unchanged."""
    view = attention_view(t.model)
    for layer in sorted({layer for layer, _ in heads}):
        off = [head for lay, head in heads if lay == layer]

        def zero_heads(module, args, off=off):
            mixed = args[0].clone()
            for head in off:
                mixed[..., (head - 1) * t.head_size : head * t.head_size] = 0
            return (mixed, *args[1:])

        replace(t, model=view).output_projection(layer).register_forward_pre_hook(zero_heads)
    return view


def ablate(t: Transformer, text: str, heads: str = "1.1", top_k: int = 5) -> dict:
    """The prediction before and after switching heads off (decoder: the next token; encoder: the first mask)."""
    if t.word_head() is None:
        raise HubError(
            f"{t.name} has no word-prediction head, so there is nothing to compare: pick the decoder or BERT."
        )
    chosen = parse_heads(t, heads)
    top_k = check_int(top_k, "Top k", 1, 20)
    if not chosen:
        raise HubError("Heads: name at least one head to switch off, for example 1.3, 5.7 (layer.head).")
    tokens = tokenize(t, text)
    if t.kind == ENCODER and t.tokenizer.mask_token_id not in tokens.ids[0].tolist():
        raise HubError(
            f"No mask found: the encoder predicts a hidden word; write {t.tokenizer.mask_token}, [MASK], <mask> or ___."
        )
    before = prediction(t, t.model, tokens.ids, top_k)
    after = prediction(t, switch_heads_off(t, chosen), tokens.ids, top_k)
    return {"model": t.name, "heads": [f"{layer}.{head}" for layer, head in chosen], "before": before, "after": after}


def model_class(t: Transformer) -> str:
    if t.is_gpt2:
        return "AutoModelForCausalLM"
    return "AutoModelForMaskedLM" if t.word_head() is not None else "AutoModel"


def ablation_code(t: Transformer, text: str, heads: list[tuple[int, int]], top_k: int) -> str:
    projection = (
        "model.transformer.h[{}].attn.c_proj" if t.is_gpt2 else "model.bert.encoder.layer[{}].attention.output.dense"
    )
    where = "0, -1" if t.is_gpt2 else "0, mask"  # the next token, or the first mask
    mask_line = "" if t.is_gpt2 else "mask = int((inputs.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])\n"
    hooks = "\n".join(
        f"{projection.format(layer - 1)}.register_forward_pre_hook(switch_off({[h for lay, h in heads if lay == layer]}))"
        for layer in sorted({layer for layer, _ in heads})
    )
    return f"""import torch
from transformers import {model_class(t)}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = {model_class(t)}.from_pretrained({t.name!r}).eval()
inputs = tokenizer({text!r}, return_tensors="pt")
{mask_line}head_size = model.config.hidden_size // model.config.num_attention_heads


def top(logits):  # the most probable words, in percent
    probabilities = logits.softmax(-1).topk({top_k})
    return {{tokenizer.decode([i]): round(100 * p, 2) for p, i in zip(probabilities.values.tolist(), probabilities.indices.tolist())}}


def switch_off(heads):  # heads counted from 1: zero their slice of the input to the output projection
    def hook(module, args):
        mixed = args[0].clone()
        for head in heads:
            mixed[..., (head - 1) * head_size : head * head_size] = 0
        return (mixed,)
    return hook


with torch.no_grad():
    print("before", top(model(**inputs).logits[{where}]))
{hooks}
with torch.no_grad():
    print("after ", top(model(**inputs).logits[{where}]))
"""


def ablation_section(store: ModelStore) -> None:
    gr.Markdown(
        "### Switch heads off\nName heads as layer.head (`1.3, 5.7` = layer 1 head 3 and layer 5 head 7) and compare "
        "the prediction before and after: the decoder's next token, the encoder's word for the first mask."
    )
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text (the encoder needs a [MASK])", value="Paris is the [MASK] of France.")
            which = gr.Radio([("Encoder", ENCODER), ("Decoder", DECODER)], value=ENCODER, label="Model")
            heads = gr.Textbox(label="Heads to switch off (layer.head, counted from 1)", value="1.1, 1.2")
            top_k = gr.Slider(1, 20, value=5, step=1, label="Top k")
            go = gr.Button("Compare", variant="primary")
        before = gr.Label(label="Before", elem_id="ablate-before")
        after = gr.Label(label="After", elem_id="ablate-after")
    code = code_accordion()

    @show_errors
    def compare(text: str, which: str, heads: str, top_k: float):
        t = load_transformer(store, which)
        result = ablate(t, text, heads, top_k)
        chosen = parse_heads(t, heads)
        return result["before"], result["after"], ablation_code(t, tokenize(t, text).text, chosen, int(top_k))

    gr.on(
        [go.click, heads.submit], compare, [text, which, heads, top_k], [before, after, code], api_visibility="private"
    )
