"""Fill-mask: BERT reads the whole sentence in both directions and guesses the hidden word(s)."""

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
import torch
from transformers import BertForMaskedLM, Pipeline, pipeline

from hub import tiny
from hub.checks import check_int, check_text, use_model_mask
from hub.demo import Demo
from hub.errors import HubError
from hub.links import link_inputs
from hub.models import ModelStore
from hub.ui import code_accordion, load_model, show_errors

DEMO_ID = "fill-mask"
DEFAULT_MODEL = "google-bert/bert-base-uncased"
MAX_MASKS = 5  # each mask gets its own predictions from the same single forward pass
MAX_CHARS = 2_000
MAX_TOP_K = 20
TOP_K = 5  # the one default for the slider, the endpoint and the core


# ---------------------------------------------------------------------------------------------------------
# The model


def load_fill_mask(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Pipeline:
    return pipeline("fill-mask", model=source, dtype=dtype, device=device, model_kwargs={"use_safetensors": True})


def build_tiny_bert(folder: Path) -> None:
    tokenizer = tiny.bert_tokenizer(max_length=128)
    config = tiny.bert_config(tokenizer)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------
# The work


@dataclass
class FillMaskResult:
    text: str  # the input with every mask written as the model's own mask token
    predictions: list[dict[str, float]]  # one {word: probability} per mask, most likely first
    filled: str  # the text with each mask replaced by its top word
    tokens: list[str]  # how the tokenizer split the text


def fill_mask(fill: Pipeline, text: str, top_k: int = TOP_K) -> FillMaskResult:
    tokenizer = fill.tokenizer
    text = use_model_mask(check_text(text, "Text", MAX_CHARS), tokenizer.mask_token)
    top_k = check_int(top_k, "Predictions per mask", 1, MAX_TOP_K)
    ids = tokenizer(text).input_ids
    masks = ids.count(tokenizer.mask_token_id)
    if masks == 0:
        raise HubError(f"No mask found: write {tokenizer.mask_token} (or [MASK], <mask>, ___) where a word is hidden.")
    if masks > MAX_MASKS:
        raise HubError(f"Too many masks: {masks}; at most {MAX_MASKS} at once.")
    if len(ids) > tokenizer.model_max_length:
        raise HubError(f"Text is too long: {len(ids)} tokens, the model reads at most {tokenizer.model_max_length}.")

    outputs = fill(text, top_k=top_k)
    per_mask = outputs if masks > 1 else [outputs]
    predictions = []
    for candidates in per_mask:
        words: dict[str, float] = {}
        for candidate in candidates:
            word = candidate["token_str"].strip() or candidate["token_str"]
            if word in words:  # e.g. "Paris" and " Paris" in a RoBERTa vocabulary
                word = f"{word} (id {candidate['token']})"
            words[word] = float(candidate["score"])
        predictions.append(words)
    pieces = text.split(tokenizer.mask_token)
    top_words = [candidates[0]["token_str"].strip() for candidates in per_mask]
    filled = pieces[0] + "".join(word + piece for word, piece in zip(top_words, pieces[1:]))
    return FillMaskResult(text, predictions, filled, tokenizer.convert_ids_to_tokens(ids))


def predictions_table(result: FillMaskResult) -> pd.DataFrame:
    rows = [
        {"mask": number, "rank": rank, "word": word, "probability": round(p, 4)}
        for number, words in enumerate(result.predictions, start=1)
        for rank, (word, p) in enumerate(words.items(), start=1)
    ]
    return pd.DataFrame(rows)


def reproduce_code(source: str, text: str, top_k: int, dtype: torch.dtype) -> str:
    return f"""import torch
from transformers import pipeline

fill = pipeline("fill-mask", model={source!r}, dtype={dtype})
for prediction in fill({text!r}, top_k={top_k}):
    print(prediction)  # with several masks: one list of predictions per mask
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

EXAMPLES = [
    ["Paris is the [MASK] of France."],
    ["The doctor told me to take two [MASK] every day."],
    ["I went to the ___ to buy some bread and ___."],
    ["A transformer pays [MASK] to every word in the sentence."],
]


def fill_mask_tab(store: ModelStore) -> None:
    gr.Markdown(
        "BERT was trained by hiding words and guessing them from the words on **both** sides. "
        f"Write `[MASK]`, `<mask>` or `___` for up to {MAX_MASKS} hidden words."
    )
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text with a mask", lines=3, value=EXAMPLES[0][0], max_length=MAX_CHARS)
            top_k = gr.Slider(1, MAX_TOP_K, value=TOP_K, step=1, label="Predictions per mask")
            run = gr.Button("Fill in", variant="primary")
            gr.Examples(EXAMPLES, inputs=[text])
        with gr.Column():
            first = gr.Label(label="First mask", elem_id="fill-mask-first")
            filled = gr.Textbox(label="Filled in with the top words", interactive=False)
            table = gr.Dataframe(label="Predictions for every mask", interactive=False)
            tokens = gr.HighlightedText(
                label="How the tokenizer split the text", color_map={"mask": "orange"}, elem_id="fill-mask-tokens"
            )
    code = code_accordion()
    link_inputs(DEMO_ID, text=text, top_k=top_k)  # ?tab=fill-mask&text=...&top_k=... and a Copy link button
    last = gr.State()

    @show_errors
    def run_fill_mask(text: str, top_k: float = TOP_K, progress=gr.Progress()):
        result = fill_mask(load_model(store, DEMO_ID, progress), text, top_k)
        return result.predictions[0], result

    @show_errors
    def explain(result: FillMaskResult | None, top_k: float):
        if result is None:
            return "", None, [], ""
        mask = store.get(DEMO_ID).tokenizer.mask_token
        marked = [(token, "mask" if token == mask else None) for token in result.tokens]
        code_text = reproduce_code(store.source(DEMO_ID), result.text, int(top_k), store.dtype)
        return result.filled, predictions_table(result), marked, code_text

    event = gr.on(
        [run.click, text.submit], run_fill_mask, [text, top_k], [first, last], api_name="fill_mask", concurrency_limit=2
    )
    event.success(explain, [last, top_k], [filled, table, tokens, code], api_visibility="private")


DEMO = Demo(
    id=DEMO_ID,
    title="Fill-mask (BERT)",
    default_model=DEFAULT_MODEL,
    load=load_fill_mask,
    build_tiny=build_tiny_bert,
    tab=fill_mask_tab,
)
