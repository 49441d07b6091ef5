"""The "Why this prediction" tab: four views (which words, where in the model, heads with a job, what else it could
have said), each with its figure, its numbers, examples that run on click and the code that reproduces them."""

import html

import gradio as gr
import pandas as pd

from demos.inside.layers import readable
from demos.why_this_prediction import attribution as attr
from demos.why_this_prediction import induction as ind
from demos.why_this_prediction import patching as pat
from demos.why_this_prediction import similarity as sim
from demos.why_this_prediction.api import register_api
from demos.why_this_prediction.common import percent, top_words, word_id
from demos.why_this_prediction.tab_branches import branches_view
from hub.errors import HubError
from hub.inside import DECODER, ENCODER, OFFLINE_ENCODER, load_transformer, tokenize
from hub.links import link_inputs
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

DEMO_ID = "why-this-prediction"
MODELS = [
    ("Decoder (GPT-2): the next token", DECODER),
    ("Encoder (BERT): the word at the mask", ENCODER),
    ("MiniLM (works offline): sentence similarity", OFFLINE_ENCODER),
]

INTRO = """Attention shows where a model looks, not what made it decide. Four views on the loaded GPT-2 and BERT:
**which words** caused a prediction, **where in the model** it was decided, **heads with a job** (induction heads),
and **what else** it could have said. MiniLM has no word head: there the first two views explain a **sentence
similarity** (similarity mode)."""

ATTRIBUTION_TEXT = """**What you are looking at:** one bar per input token: how much it pushed the model towards the
target word (red) or away from it (blue), by three methods, and how far their rankings agree."""
PATCHING_TEXT = """**What you are looking at:** the corrupted prompt run again with one cell of the clean run put back:
the share of the clean answer's logit difference that comes back (100% = all of it), per layer × position."""
HEADS_TEXT = """**Heads:** the same question for one attention head at a time: its output (its slice of the input to
the layer's output projection) put back at the prediction's position only (in similarity mode, at every position).
A head near 100% carries the answer."""
INDUCTION_TEXT = """**What you are looking at:** random tokens, then the same tokens again. The loss per token (lower =
better predicted) falls in the copy; the heat map says which heads look back at "what came next last time"."""
SIMILARITY_MODE = """**Similarity mode:** {name} has no word head, so there is no word to explain. What is explained
instead is {words}: the cosine similarity of the sentence embeddings (the mean of the last layer's hidden states over
the tokens, as sentence-transformers pools MiniLM)."""

ATTRIBUTION_EXAMPLES = [
    ["The Eiffel Tower is in the city of", DECODER, "", ""],
    ["The Eiffel Tower is in the city of", DECODER, " Paris", " London"],
    ["Paris is the [MASK] of France.", ENCODER, "", ""],
    ["The doctor said that [MASK] would be late.", ENCODER, "he", "she"],
    ["A cat is sleeping on the sofa.", OFFLINE_ENCODER, "A kitten naps on the couch.", "The stock market fell."],
]
PATCHING_EXAMPLES = [
    ["The capital of France is the city of", "The capital of Italy is the city of", DECODER, "", ""],
    [
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
        DECODER,
        "",
        "",
    ],
    ["Paris is the capital of [MASK].", "Rome is the capital of [MASK].", ENCODER, "", ""],
    [
        "A cat is sleeping on the sofa.",
        "A dog is sleeping on the sofa.",
        OFFLINE_ENCODER,
        "A kitten naps on a couch.",
        "",
    ],
]


# The target and contrast (or foil) boxes' labels: words, or in similarity mode sentences.
WORD_LABELS = {
    "Rather than": ("Target word (empty = the top word)", "Rather than (optional: why A, not B)"),
    "Foil": ("Target (empty = clean's top word)", "Foil (empty = corrupted's top word)"),
}


def word_labels(similar: bool, second: str = "Rather than") -> tuple:
    first, other = (
        ("Compare with (a sentence)", f"{second} (optional second sentence)") if similar else WORD_LABELS[second]
    )
    return gr.update(label=first), gr.update(label=other)


def typeable(t, token_id: int) -> str:
    """A word as a person types it (" Paris") where that reads back as this one token, else the model's token."""
    text = t.tokenizer.decode([token_id])
    try:
        return text if word_id(t, text, "Target") == token_id else t.tokenizer.convert_ids_to_tokens(token_id)
    except HubError:
        return t.tokenizer.convert_ids_to_tokens(token_id)


def attribution_view(store: ModelStore) -> dict:
    gr.Markdown(ATTRIBUTION_TEXT)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(
                label="Text (the encoder needs a [MASK])", value=ATTRIBUTION_EXAMPLES[0][0], max_length=2_000
            )
            with gr.Row():
                target = gr.Textbox(label=WORD_LABELS["Rather than"][0], max_length=2_000)
                contrast = gr.Textbox(label=WORD_LABELS["Rather than"][1], max_length=2_000)
        with gr.Column(scale=2):
            which = gr.Radio(MODELS, value=DECODER, label="Model")
            steps = gr.Slider(attr.MIN_STEPS, attr.MAX_STEPS, value=32, step=1, label="Integrated gradients steps")
            run = gr.Button("Explain", variant="primary", elem_id="why-attribution-run")
    examples_place = gr.Column()
    summary = gr.Markdown(elem_id="why-attribution-summary")
    figure = figure_image(label="Attribution per input token", show_label=False, elem_id="why-attribution-figure")
    with gr.Row():
        top = gr.Dataframe(
            pd.DataFrame(columns=["word", "probability"]),
            label="Top words (click one to explain it)",
            interactive=False,
            elem_id="why-attribution-top",
        )
        agreement = gr.Dataframe(
            label="Agreement: Spearman rank correlation",
            headers=["method", "method ", "rank correlation (1 = same order)"],
            interactive=False,
            wrap=True,
        )
    scores = gr.Dataframe(
        label="The same numbers",
        headers=["token", *[attr.METHOD_NAMES[m] for m in attr.METHODS[:-1]], "Occlusion (probability drop, points)"],
        interactive=False,
        wrap=True,
    )
    code = code_accordion()

    @show_errors
    def explain(text, which, target, contrast, steps, progress=gr.Progress()):
        t = load_transformer(store, which, on_load=lambda message: progress(0, desc=message))
        similar = sim.is_similarity(t)
        c = attr.compare_methods(t, text, target, contrast, steps)
        q = c.question
        numbers = pd.DataFrame(
            {"token": [readable(t, tok, 20) for tok in q.tokens.tokens]}
            | {attr.METHOD_NAMES[m]: [round(s, 5) for s in v] for m, v in c.scores.items()}
        )
        pairs = pd.DataFrame(
            [[attr.METHOD_NAMES[a], attr.METHOD_NAMES[b], round(rho, 3)] for (a, b), rho in c.agreement.items()],
            columns=["method", "method ", "rank correlation (1 = same order)"],
        )
        ig_total = sum(c.scores["integrated_gradients"])
        completeness = (
            f"Baseline: {html.escape(c.baseline)}. Integrated gradients: the scores add up to {ig_total:.4f} = "
            f"f(input) − f(baseline) + convergence delta {c.delta:.2e}."
        )
        notice = f"{t.notice} " if t.notice else ""
        if similar:
            table, typed = pd.DataFrame(columns=["word", "probability"]), []  # no words: nothing to pick
            numbers = numbers.rename(columns={"Occlusion": "Occlusion (similarity drop)"})
            message = (
                f"{notice}{SIMILARITY_MODE.format(name=html.escape(t.name), words=html.escape(q.similarity.words()))}"
                f" For this text it is **{q.value:.4f}**. {completeness}"
            )
        else:
            words = top_words(t, q.prediction.logits)
            top_ids = q.prediction.logits.topk(len(words)).indices.tolist()
            typed = [typeable(t, token_id) for token_id in top_ids]  # what the target box gets when a row is clicked
            table = pd.DataFrame({"word": [repr(w) for w, _ in words], "probability": [percent(p) for _, p in words]})
            numbers = numbers.rename(columns={"Occlusion": "Occlusion (probability drop, points)"})
            numbers["Occlusion (probability drop, points)"] = [round(100 * s, 4) for s in c.scores["occlusion"]]
            message = (
                f"{notice}Explaining **{html.escape(attr.question_words(t, q))}** (probability "
                f"{percent(attr.target_probability(q))}). {completeness}"
            )
        code_text = attr.attribution_code(t, tokenize(t, text).text, q, int(steps), store.dtype)
        return (message, attr.comparison_figure(t, c), table, pairs, numbers, code_text, typed,
                *word_labels(similar))  # fmt: skip

    inputs = [text, which, target, contrast, steps]
    top_typed = gr.State([])
    outputs = [summary, figure, top, agreement, scores, code, top_typed, target, contrast]
    gr.on([run.click, text.submit, target.submit, contrast.submit], explain, inputs, outputs, api_visibility="private")
    which.change(lambda which: word_labels(which == OFFLINE_ENCODER), which, [target, contrast],
                 api_visibility="private")  # fmt: skip

    def pick(typed: list[str], evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, list | tuple) else None
        if row is None or not 0 <= row < len(typed):
            return gr.skip()
        return typed[row]

    top.select(pick, top_typed, target, api_visibility="private").then(
        explain, inputs, outputs, api_visibility="private"
    )
    with examples_place:
        gr.Examples(ATTRIBUTION_EXAMPLES, [text, which, target, contrast], outputs, fn=lambda *a: explain(*a, 32),
                    run_on_click=True, cache_examples=False, label="Examples: click one to run it")  # fmt: skip
    return {"text": text, "model": which, "target": target, "contrast": contrast}


def patching_view(store: ModelStore) -> dict:
    gr.Markdown(PATCHING_TEXT)
    with gr.Row():
        with gr.Column(scale=3):
            clean = gr.Textbox(label="Clean prompt", value=PATCHING_EXAMPLES[0][0], max_length=2_000)
            corrupted = gr.Textbox(label="Corrupted prompt (same number of tokens)", value=PATCHING_EXAMPLES[0][1],
                                   max_length=2_000)  # fmt: skip
        with gr.Column(scale=2):
            which = gr.Radio(MODELS, value=DECODER, label="Model")
            with gr.Row():
                target = gr.Textbox(label=WORD_LABELS["Foil"][0], max_length=2_000)
                foil = gr.Textbox(label=WORD_LABELS["Foil"][1], max_length=2_000)
            run = gr.Button("Patch", variant="primary", elem_id="why-patching-run")
    examples_place = gr.Column()
    summary = gr.Markdown(elem_id="why-patching-summary")
    layers = figure_image(label="Residual stream: layer × position", show_label=False, elem_id="why-patching-layers")
    with gr.Row():
        heads = figure_image(
            label="Heads, at the prediction's position", show_label=False, elem_id="why-patching-heads", scale=3
        )
        gr.Markdown(HEADS_TEXT)
    code = code_accordion()

    @show_errors
    def patch(clean, corrupted, which, target, foil, progress=gr.Progress()):
        t = load_transformer(store, which, on_load=lambda message: progress(0, desc=message))
        progress(0, desc="Patching every layer × position...")
        setup = pat.read_setup(t, clean, corrupted, target, foil)
        result = pat.patch(t, setup)
        measure = html.escape(result["measure"])
        message = (
            f"{measure}: clean {result['clean_diff']:.3f}, corrupted {result['corrupted_diff']:.3f}. A cell at 100% "
            "restores the clean value; 0% changes nothing."
        )
        clean_text, corrupted_text = tokenize(t, clean).text, tokenize(t, corrupted).text
        if setup.similarity is not None:
            message = f"{SIMILARITY_MODE.format(name=html.escape(t.name), words=measure)} {message}"
            code_text = sim.patching_code(t, clean_text, corrupted_text, setup.similarity, store.dtype)
        else:
            code_text = pat.patching_code(t, clean_text, corrupted_text, result, setup.pair.target_id,
                                          setup.pair.foil_id, store.dtype)  # fmt: skip
        message = f"{t.notice} {message}" if t.notice else message
        return (message, pat.layer_figure(t, result), pat.head_figure(t, result), code_text,
                *word_labels(setup.similarity is not None, "Foil"))  # fmt: skip

    inputs, outputs = [clean, corrupted, which, target, foil], [summary, layers, heads, code, target, foil]
    gr.on([run.click, clean.submit, corrupted.submit], patch, inputs, outputs, api_visibility="private")
    which.change(lambda which: word_labels(which == OFFLINE_ENCODER, "Foil"), which, [target, foil],
                 api_visibility="private")  # fmt: skip
    with examples_place:
        gr.Examples(PATCHING_EXAMPLES, inputs, outputs, fn=patch, run_on_click=True, cache_examples=False,
                    label="Examples: click one to run it")  # fmt: skip
    return {"clean": clean, "corrupted": corrupted, "patch_model": which}


def induction_view(store: ModelStore) -> dict:
    gr.Markdown(INDUCTION_TEXT)
    with gr.Row():
        length = gr.Slider(ind.MIN_LENGTH, ind.MAX_LENGTH, value=50, step=1, label="Random tokens (each half)")
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=ind.MAX_SEED, label="Seed")
        off = gr.Slider(0, 12, value=3, step=1, label="Top heads to switch off")
        run = gr.Button("Run", variant="primary", elem_id="why-induction-run")
    summary = gr.Markdown(elem_id="why-induction-summary")
    losses = figure_image(label="Loss per token", show_label=False, elem_id="why-induction-losses")
    with gr.Row():
        scores = figure_image(
            label="Induction score per head", show_label=False, elem_id="why-induction-scores", scale=3
        )
        ranking = gr.Dataframe(
            label="Heads ranked by induction score",
            headers=["head (layer.head)", "induction score"],
            interactive=False,
            max_height=400,
            scale=2,
        )
    code = code_accordion()

    @show_errors
    def show(length, seed, off, progress=gr.Progress()):
        t = load_transformer(store, DECODER, on_load=lambda message: progress(0, desc=message))
        result = ind.induction(t, length, seed)
        first, second = ind.half_means(result.losses, result.length)
        off = max(0, min(int(off), t.layers * t.heads))
        heads = ind.top_heads(result.scores, off)
        ablated = ind.ablated_losses(t, result, heads) if heads else None
        message = f"Mean loss: first half **{first:.3f}**, second half (the copy) **{second:.3f}**."
        if ablated is not None:
            _, after = ind.half_means(ablated, result.length)
            names = ", ".join(f"{layer}.{head}" for layer, head in heads)
            message += f" With heads {names} (layer.head) switched off, the second half's loss is **{after:.3f}**."
        order = ind.top_heads(result.scores, t.layers * t.heads)
        table = pd.DataFrame(
            [[f"{layer}.{head}", round(result.scores[layer - 1][head - 1], 4)] for layer, head in order],
            columns=["head (layer.head)", "induction score"],
        )
        code_text = ind.induction_code(t, result.length, int(seed), store.dtype)
        return message, ind.loss_figure(result, ablated, heads), ind.score_figure(result), table, code_text

    gr.on([run.click], show, [length, seed, off], [summary, losses, scores, ranking, code], api_visibility="private")
    gr.Examples([[50, 0, 3], [20, 1, 0], [100, 2, 6]], [length, seed, off], [summary, losses, scores, ranking, code],
                fn=show, run_on_click=True, cache_examples=False, label="Examples: click one to run it")  # fmt: skip
    return {"length": length, "seed": seed}


def why_tab(store: ModelStore) -> None:
    gr.Markdown(INTRO)
    linked = {}
    with gr.Tabs(overflow_behavior="wrap"):  # every view in the bar, none in a "..." menu
        with gr.Tab("Which words", id="attribution"):
            linked |= attribution_view(store)
        with gr.Tab("Where in the model", id="patching"):
            linked |= patching_view(store)
        with gr.Tab("Induction heads", id="induction"):
            linked |= induction_view(store)
        with gr.Tab("What else", id="branches"):
            linked |= branches_view(store)
    link_inputs(DEMO_ID, **linked)  # ?tab=why-this-prediction&text=...&clean=...&length=...
    register_api(store)
