"""The "Why this prediction" tab: four views (which words, where in the model, heads with a job, what else it could
have said), each with its figure, its numbers, examples that run on click and the code that reproduces them."""

import html

import gradio as gr
import pandas as pd

from demos.inside.layers import readable
from demos.why_this_prediction import attribution as attr
from demos.why_this_prediction import branches as br
from demos.why_this_prediction import induction as ind
from demos.why_this_prediction import patching as pat
from demos.why_this_prediction.api import register_api, run_as_job
from demos.why_this_prediction.common import top_words, word_id
from hub.errors import HubError
from hub.inside import DECODER, ENCODER, load_transformer, tokenize
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

DEMO_ID = "why-this-prediction"
MODELS = [("Decoder (GPT-2): the next token", DECODER), ("Encoder (BERT): the word at the mask", ENCODER)]

INTRO = """Attention shows where a model looks, not what made it decide. Four views on the loaded GPT-2 and BERT:
**which words** caused a prediction, **where in the model** it was decided, **heads with a job** (induction heads),
and **what else** it could have said."""

ATTRIBUTION_TEXT = """**What you are looking at:** one bar per input token: how much it pushed the model towards the
target word (red) or away from it (blue), by three methods, and how far their rankings agree."""
PATCHING_TEXT = """**What you are looking at:** the corrupted prompt run again with one cell of the clean run put back:
the share of the clean answer's logit difference that comes back (100% = all of it), per layer × position."""
HEADS_TEXT = """**Heads:** the same question for one attention head at a time: its output (its slice of the input to
the layer's output projection) put back at the prediction's position only. A head near 100% carries the answer."""
INDUCTION_TEXT = """**What you are looking at:** random tokens, then the same tokens again. The loss per token (lower =
better predicted) falls in the copy; the heat map says which heads look back at "what came next last time"."""
BRANCHES_TEXT = """**What you are looking at:** the same prompt at several temperatures (0 = always the top token). Bold
marks where a run parts from the first one; click a token to see its alternatives and branch from one."""

ATTRIBUTION_EXAMPLES = [
    ["The Eiffel Tower is in the city of", DECODER, "", ""],
    ["The Eiffel Tower is in the city of", DECODER, " Paris", " London"],
    ["Paris is the [MASK] of France.", ENCODER, "", ""],
    ["The doctor said that [MASK] would be late.", ENCODER, "he", "she"],
]
PATCHING_EXAMPLES = [
    ["The capital of France is the city of", "The capital of Italy is the city of", DECODER],
    [
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
        DECODER,
    ],
    ["Paris is the capital of [MASK].", "Rome is the capital of [MASK].", ENCODER],
]


def typeable(t, token_id: int) -> str:
    """A word as a person types it (" Paris") where that reads back as this one token, else the model's token."""
    text = t.tokenizer.decode([token_id])
    try:
        return text if word_id(t, text, "Target") == token_id else t.tokenizer.convert_ids_to_tokens(token_id)
    except HubError:
        return t.tokenizer.convert_ids_to_tokens(token_id)


def percent(p: float) -> str:
    return f"{100 * p:.2f}%"


def attribution_view(store: ModelStore) -> dict:
    gr.Markdown(ATTRIBUTION_TEXT)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(
                label="Text (the encoder needs a [MASK])", value=ATTRIBUTION_EXAMPLES[0][0], max_length=2_000
            )
            with gr.Row():
                target = gr.Textbox(label="Target word (empty = the top word)", max_length=100)
                contrast = gr.Textbox(label="Rather than (optional: why A, not B)", max_length=100)
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
        c = attr.compare_methods(t, text, target, contrast, steps)
        q = c.question
        words = top_words(t, q.prediction.logits)
        top_ids = q.prediction.logits.topk(len(words)).indices.tolist()
        typed = [typeable(t, token_id) for token_id in top_ids]  # what the target box gets when a row is clicked
        table = pd.DataFrame({"word": [repr(w) for w, _ in words], "probability": [percent(p) for _, p in words]})
        numbers = pd.DataFrame(
            {"token": [readable(t, tok, 20) for tok in q.prediction.tokens.tokens]}
            | {attr.METHOD_NAMES[m]: [round(s, 5) for s in v] for m, v in c.scores.items()}
        )
        numbers = numbers.rename(columns={"Occlusion": "Occlusion (probability drop, points)"})
        numbers["Occlusion (probability drop, points)"] = [round(100 * s, 4) for s in c.scores["occlusion"]]
        pairs = pd.DataFrame(
            [[attr.METHOD_NAMES[a], attr.METHOD_NAMES[b], round(rho, 3)] for (a, b), rho in c.agreement.items()],
            columns=["method", "method ", "rank correlation (1 = same order)"],
        )
        ig_total = sum(c.scores["integrated_gradients"])
        message = (
            f"{t.notice + ' ' if t.notice else ''}Explaining **{html.escape(attr.question_words(t, q))}** "
            f"(probability {percent(attr.target_probability(q))}). Baseline: {html.escape(c.baseline)}. Integrated "
            f"gradients: the scores add up to {ig_total:.4f} = f(input) − f(baseline) + convergence delta "
            f"{c.delta:.2e}."
        )
        code_text = attr.attribution_code(t, tokenize(t, text).text, q, int(steps), store.dtype)
        return message, attr.comparison_figure(t, c), table, pairs, numbers, code_text, typed

    inputs = [text, which, target, contrast, steps]
    top_typed = gr.State([])
    outputs = [summary, figure, top, agreement, scores, code, top_typed]
    gr.on([run.click, text.submit, target.submit, contrast.submit], explain, inputs, outputs, api_visibility="private")

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
                target = gr.Textbox(label="Target (empty = clean's top word)", max_length=100)
                foil = gr.Textbox(label="Foil (empty = corrupted's top word)", max_length=100)
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
        result = pat.patching(t, clean, corrupted, target, foil)
        message = (
            f"Logit difference {html.escape(repr(result['target']))} − {html.escape(repr(result['foil']))}: clean "
            f"{result['clean_diff']:.3f}, corrupted {result['corrupted_diff']:.3f}. A cell at 100% restores the "
            "clean difference; 0% changes nothing."
        )
        pair = pat.read_pair(t, clean, corrupted, target, foil)
        code_text = pat.patching_code(t, tokenize(t, clean).text, tokenize(t, corrupted).text, result,
                                      pair.target_id, pair.foil_id, store.dtype)  # fmt: skip
        return message, pat.layer_figure(t, result), pat.head_figure(t, result), code_text

    inputs, outputs = [clean, corrupted, which, target, foil], [summary, layers, heads, code]
    gr.on([run.click, clean.submit, corrupted.submit], patch, inputs, outputs, api_visibility="private")
    with examples_place:
        gr.Examples(PATCHING_EXAMPLES, [clean, corrupted, which], outputs, fn=lambda a, b, w: patch(a, b, w, "", ""),
                    run_on_click=True, cache_examples=False, label="Examples: click one to run it")  # fmt: skip
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


def parse_temperatures(text: str) -> list[float]:
    try:
        return [float(part) for part in str(text).replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise HubError("Temperatures: write numbers separated by commas, e.g. 0, 0.7, 1.2.") from None


def runs_markdown(decoder: br.Decoder, sequences: list[dict]) -> str:
    """The runs, each branch indented under the sequence it grew from; in red, the part after a run leaves the first
    run (or after a branch leaves its parent)."""
    first = sequences[0]["tokens"] if sequences else []
    children: dict[int | None, list[int]] = {}
    for i, s in enumerate(sequences):
        children.setdefault(s.get("parent"), []).append(i)
    lines = []

    def write(i: int, depth: int) -> None:
        s = sequences[i]
        part = br.shared_prefix(first, s["tokens"]) if s.get("parent") is None else s["branch_at"]
        same = html.escape(decoder.tokenizer.convert_tokens_to_string(s["tokens"][:part]))
        rest = html.escape(decoder.tokenizer.convert_tokens_to_string(s["tokens"][part:]))
        lines.append(f"{'    ' * depth}- **{html.escape(s['label'])}**: {same}<b style='color:#c0392b'>{rest}</b>")
        for child in children.get(i, []):
            write(child, depth + 1)

    for root in children.get(None, []):
        write(root, 0)
    return "\n".join(lines)


def branches_view(store: ModelStore) -> dict:
    gr.Markdown(BRANCHES_TEXT)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value="The Eiffel Tower is in the city of", scale=3, max_length=2_000)
        temperatures = gr.Textbox(label="Temperatures (comma separated; 0 = greedy)", value="0, 0.7, 1.2", scale=2)
    with gr.Row():
        new_tokens = gr.Slider(1, br.MAX_NEW_TOKENS, value=24, step=1, label="Max new tokens")
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=br.MAX_SEED, label="Seed")
        run = gr.Button("Generate", variant="primary", elem_id="why-branches-run")
        reset = gr.Button("Reset the tree")
    runs = gr.Markdown(elem_id="why-branches-runs")
    with gr.Row():
        with gr.Column(scale=3):
            pick = gr.Dropdown(label="Sequence", choices=[], interactive=True)
            tokens = gr.HighlightedText(label="Its tokens (click one to see what else could have come there)",
                                        elem_id="why-branches-tokens", combine_adjacent=False)  # fmt: skip
        with gr.Column(scale=2):
            options = gr.Dataframe(
                label="Alternatives at the clicked token", headers=["token", "probability"], interactive=False
            )
            alternative = gr.Dropdown(label="Continue from", choices=[], interactive=True)
            branch_temperature = gr.Slider(0, br.MAX_TEMPERATURE, value=0.7, step=0.05, label="Branch temperature")
            grow = gr.Button("Branch from this alternative", variant="primary", elem_id="why-branches-grow")
    code = code_accordion()
    sequences, clicked = gr.State([]), gr.State(None)  # this visitor's tree, and the token they clicked

    def decoder() -> br.Decoder:
        loaded = store.get("text-generation")
        return br.Decoder(loaded.model, loaded.tokenizer)

    def shown(d: br.Decoder, seqs: list[dict], index: int):
        s = seqs[index]
        at = s["branch_at"]
        chips = [(d.tokenizer.convert_tokens_to_string([tok]), None if at is None or i > at else "kept" if i < at
                  else "branch") for i, tok in enumerate(s["tokens"])]  # fmt: skip
        choices = [(s["label"], i) for i, s in enumerate(seqs)]
        return runs_markdown(d, seqs), gr.Dropdown(choices=choices, value=index), chips

    @show_errors
    @off_model_thread  # its job generates on the model thread
    def generate(prompt, temperatures, new_tokens, seed):
        d = decoder()
        values = parse_temperatures(temperatures)
        result = yield from run_as_job(lambda stop: br.branches(d, prompt, values, new_tokens, seed, stop), 7)
        seqs = [{"label": f"temperature {r['temperature']:g}", "tokens": r["tokens"], "prompt": prompt,
                 "branch_at": None, "parent": None} for r in result["runs"]]  # fmt: skip
        code_text = br.branches_code(store.source("text-generation"), prompt, br.check_temperatures(values),
                                     int(new_tokens), int(seed), store.dtype)  # fmt: skip
        yield seqs, *shown(d, seqs, 0), None, None, code_text

    run_outputs = [sequences, runs, pick, tokens, options, clicked, code]
    gr.on([run.click, prompt.submit], generate, [prompt, temperatures, new_tokens, seed], run_outputs,
          api_visibility="private")  # fmt: skip

    def clear():
        return [], "", gr.Dropdown(choices=[], value=None), [], None, None

    reset.click(clear, None, [sequences, runs, pick, tokens, options, clicked], api_visibility="private")

    @show_errors
    def choose(seqs, index):
        if not seqs or index is None:
            return gr.skip(), gr.skip()
        return shown(decoder(), seqs, int(index))[2], None

    pick.input(choose, [sequences, pick], [tokens, options], api_visibility="private")

    @show_errors
    def alternatives_at(prompt, seqs, index, evt: gr.SelectData):
        if not seqs or index is None or not isinstance(evt.index, int):
            return gr.skip(), gr.skip(), gr.skip()
        s = seqs[int(index)]
        prefix = s["tokens"][: evt.index]
        found = br.alternatives(decoder(), s["prompt"], prefix)
        table = pd.DataFrame({"token": [repr(a["text"]) for a in found],
                              "probability": [percent(a["probability"]) for a in found]})  # fmt: skip
        choices = [(repr(a["text"]), a["token"]) for a in found]
        return table, gr.Dropdown(choices=choices, value=found[0]["token"]), {"sequence": int(index), "at": evt.index}

    tokens.select(alternatives_at, [prompt, sequences, pick], [options, alternative, clicked], api_visibility="private")

    @show_errors
    @off_model_thread  # its job generates on the model thread
    def branch(prompt, seqs, where, chosen, temperature, new_tokens, seed):
        if not seqs or not where or not chosen:
            raise HubError("Click a token of a sequence first, then pick an alternative.")
        d = decoder()
        parent = seqs[where["sequence"]]
        prefix = parent["tokens"][: where["at"]]
        prompt = parent["prompt"]  # the prompt these runs grew from, even if the box was edited since
        work = lambda stop: br.continue_from(d, prompt, prefix, chosen, new_tokens, seed, temperature, stop)  # noqa: E731
        result = yield from run_as_job(work, 4)
        label = f"→ {d.tokenizer.convert_tokens_to_string([chosen])!r} at token {where['at'] + 1}, T={temperature:g}"
        seqs = [*seqs, {"label": label, "tokens": result["tokens"], "prompt": parent["prompt"],
                        "branch_at": result["branch_at"], "parent": where["sequence"]}]  # fmt: skip
        yield seqs, *shown(d, seqs, len(seqs) - 1)

    grow.click(branch, [prompt, sequences, clicked, alternative, branch_temperature, new_tokens, seed],
               [sequences, runs, pick, tokens], api_visibility="private")  # fmt: skip
    return {"prompt": prompt, "temperatures": temperatures}


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
