"""The "What else" view of "Why this prediction": the same prompt at several temperatures side by side, each token's
alternatives, and a tree of branches the visitor grows from them."""

import html

import gradio as gr
import pandas as pd

from demos.why_this_prediction import branches as br
from demos.why_this_prediction.api import run_as_job
from demos.why_this_prediction.common import percent
from hub.errors import HubError
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, show_errors

BRANCHES_TEXT = """**What you are looking at:** the same prompt at several temperatures (0 = always the top token). Bold
marks where a run parts from the first one; click a token to see its alternatives and branch from one."""


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
