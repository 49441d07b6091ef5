"""Fill-mask: BERT reads the whole sentence in both directions and guesses the hidden word(s)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch
from transformers import BertForMaskedLM, Pipeline, PreTrainedModel, pipeline

from hub import tiny
from hub.batching import MAX_BATCH, MicroBatcher
from hub.checks import check_int, check_text, use_model_mask
from hub.demo import Demo
from hub.errors import HubError
from hub.links import link_inputs
from hub.model_thread import off_model_thread
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


@dataclass
class FillMaskRequest:
    """One visitor's text, checked and tokenized: what joins a batch."""

    text: str
    top_k: int
    ids: list[int]


def fill_mask_request(tokenizer: Any, text: str, top_k: int = TOP_K) -> FillMaskRequest:
    """Check a visitor's text and top_k (a HubError says what is wrong) before it joins a batch with others."""
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
    return FillMaskRequest(text, top_k, ids)


def fill_masks(fill: Pipeline, requests: list[FillMaskRequest]) -> list[FillMaskResult]:
    """Several checked texts in one forward pass, padded to the longest; the attention mask keeps the padding out
    of every text's attention, so each result is the one its text gets alone. The same arithmetic as
    transformers' fill-mask pipeline: the softmax over the vocabulary at each mask, its top k."""
    tokenizer, model = fill.tokenizer, fill.model
    inputs = tokenizer.pad({"input_ids": [r.ids for r in requests]}, return_tensors="pt").to(model.device)
    at_masks = inputs.input_ids == tokenizer.mask_token_id  # (texts, positions): where a word is hidden
    with torch.inference_mode(), vocabulary_head_reads_only(model, at_masks):
        logits = model(**inputs).logits  # (masks, vocabulary): one row per mask, text after text
    per_text = logits.split(at_masks.sum(dim=1).tolist())
    return [fill_mask_result(tokenizer, request, text_logits) for request, text_logits in zip(requests, per_text)]


@contextmanager
def vocabulary_head_reads_only(model: PreTrainedModel, positions: torch.Tensor) -> Iterator[None]:
    """While in this block, the model's vocabulary projection (its output embeddings) reads only these positions
    (a (texts, positions) boolean mask). The pipeline projects every position onto the 30,522 words and keeps the
    masks' rows; each row is the same product of one position's vector, so skipping the others saves a fifth of
    BERT-base's arithmetic on a sentence."""
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0][positions], *args[1:]))
    try:
        yield
    finally:
        hook.remove()


def fill_mask_result(tokenizer: Any, request: FillMaskRequest, logits: torch.Tensor) -> FillMaskResult:
    """One text's predictions from its masks' logits (masks, vocabulary)."""
    top = logits.float().softmax(-1).topk(request.top_k)
    predictions = []
    for values, indices in zip(top.values.tolist(), top.indices.tolist()):
        words: dict[str, float] = {}
        for p, token in zip(values, indices):
            shown = tokenizer.decode([token])
            word = shown.strip() or shown
            if word in words:  # e.g. "Paris" and " Paris" in a RoBERTa vocabulary
                word = f"{word} (id {token})"
            words[word] = p
        predictions.append(words)
    pieces = request.text.split(tokenizer.mask_token)
    top_words = [tokenizer.decode([indices[0]]).strip() for indices in top.indices.tolist()]
    filled = pieces[0] + "".join(word + piece for word, piece in zip(top_words, pieces[1:]))
    return FillMaskResult(request.text, predictions, filled, tokenizer.convert_ids_to_tokens(request.ids))


def fill_mask(fill: Pipeline, text: str, top_k: int = TOP_K) -> FillMaskResult:
    """The model's guesses for every mask in `text`: one forward pass, as the fill-mask pipeline makes it."""
    return fill_masks(fill, [fill_mask_request(fill.tokenizer, text, top_k)])[0]


PREDICTION_COLUMNS = ["mask", "rank", "word", "probability (%)"]  # the empty table shows them before a run


def predictions_table(result: FillMaskResult) -> pd.DataFrame:
    rows = [
        (number, rank, word, round(100 * p, 2))
        for number, words in enumerate(result.predictions, start=1)
        for rank, (word, p) in enumerate(words.items(), start=1)
    ]
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


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


def token_view(tokens: list[str], mask_token: str) -> list[tuple[str, str | None]]:
    """The tokens for gr.HighlightedText, each its own chip with a space between, so that "we" and "##nt" read as
    two tokens; the masks in orange."""
    view: list[tuple[str, str | None]] = []
    for token in tokens:
        if view:
            view.append((" ", None))
        view.append((token, "mask" if token == mask_token else "token"))
    return view


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
            examples = gr.Column()
        with gr.Column():
            first = gr.Label(label="First mask", elem_id="fill-mask-first")
            filled = gr.Textbox(label="Filled in with the top words", interactive=False)
            table = gr.Dataframe(
                pd.DataFrame(columns=PREDICTION_COLUMNS), label="Predictions for every mask", interactive=False
            )
            tokens = gr.HighlightedText(
                label="How the tokenizer split the text",
                color_map={"mask": "orange", "token": "#e5e7eb"},
                show_inline_category=False,
                elem_id="fill-mask-tokens",
            )
    code = code_accordion()
    link_inputs(DEMO_ID, run=run, text=text, top_k=top_k)  # ?tab=fill-mask&text=...&top_k=... and a Copy link button
    # Visitors who ask at about the same time share one forward pass; each request is checked on its own first.
    batched = MicroBatcher(lambda requests: fill_masks(store.get(DEMO_ID), requests))

    def fill_in(text: str, top_k: float, progress: gr.Progress | None) -> FillMaskResult:
        fill = load_model(store, DEMO_ID, progress)
        return batched(fill_mask_request(fill.tokenizer, text, top_k))

    @show_errors
    @off_model_thread  # the batcher runs the forward pass on the model thread
    def fill_mask_endpoint(text: str, top_k: float = TOP_K, progress=gr.Progress()):
        """Guess the hidden word: BERT's probabilities for the first mask in the text.

        Args:
            text: a sentence with one to five masks, written [MASK], <mask> or ___ (at most 2000 characters).
            top_k: how many words to return for the mask, 1 to 20; default 5.

        Returns:
            The top_k words for the first mask, each with its probability (a fraction from 0 to 1), most likely first.
        """
        return fill_in(text, top_k, progress).predictions[0]

    @show_errors
    @off_model_thread
    def show(text: str, top_k: float = TOP_K, progress=gr.Progress()):
        result = fill_in(text, top_k, progress)
        mask = store.get(DEMO_ID).tokenizer.mask_token
        code_text = reproduce_code(store.source(DEMO_ID), result.text, len(result.predictions[0]), store.dtype)
        marked = token_view(result.tokens, mask)
        return result.predictions[0], result.filled, predictions_table(result), marked, code_text

    shown = [first, filled, table, tokens, code]
    # The page's one event fills every view at once; the HTTP endpoint answers the label alone (no trigger on the page).
    gr.on(
        [run.click, text.submit],
        show,
        [text, top_k],
        shown,
        api_visibility="private",
        concurrency_limit=MAX_BATCH,
        concurrency_id=DEMO_ID,
    )
    gr.on(
        [],
        fill_mask_endpoint,
        [text, top_k],
        first,
        api_name="fill_mask",
        concurrency_limit=MAX_BATCH,
        concurrency_id=DEMO_ID,
    )
    with examples:
        gr.Examples(
            EXAMPLES, inputs=[text], outputs=shown, fn=show, run_on_click=True, cache_examples=False,
            label="Examples: click one to fill it in and run it",
        )  # fmt: skip


DEMO = Demo(
    id=DEMO_ID,
    title="Fill-mask (BERT)",
    default_model=DEFAULT_MODEL,
    load=load_fill_mask,
    build_tiny=build_tiny_bert,
    tab=fill_mask_tab,
)
