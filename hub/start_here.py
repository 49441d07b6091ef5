"""Start here: the course's outline as a guided walk through the hub. Each step says in two or three sentences what
to look at, and its button opens the view that shows it, with prepared inputs, already run (the links that carry
inputs do the opening: hub/links.py). Previous/Next walk the steps, one at a time, as a speaker does on a projector.
"""

from dataclasses import dataclass, field

import gradio as gr

from hub.links import START_HERE

# A model's state at start-up, as hub/app.py reads it: ready, download (on first use), offline, missing.
SAID = {
    "ready": "Ready on this machine.",
    "download": "Its model downloads from the Hugging Face Hub on first use: the first run waits for it.",
    "offline": "Its model is not on this machine and the hub is offline: run `python -m hub prefetch` while online.",
    "missing": "Its model folder does not exist (see `--model`).",
}


@dataclass(frozen=True)
class Step:
    title: str
    text: str  # two or three sentences: what to look at
    query: dict[str, str]  # the link that opens the view: tab, its inputs, run=1 to run it
    needs: tuple[str, ...] = ()  # the models it runs on (model store ids); none: nothing to load
    press: str = ""  # instead of a run button: a CSS selector of what to click (an example photo)
    offline_note: str = ""  # said when it needs no download at all
    button: str = field(default="")  # the button's words; default "Open <tab>"


STEPS = (
    Step(
        "Why transformers",
        "Before transformers, a recurrent network read a sentence one token at a time and a convolution saw only a "
        "few neighbours. Here three models of the same size race on a task that needs to look far back, trained in "
        "front of you: watch attention keep its accuracy as the sequences grow.",
        {"tab": "before-transformers", "run": "1"},
        offline_note="Trains three small models here, with no download: works offline.",
    ),
    Step(
        "What a transformer is",
        "A transformer turns text into tokens, lets every token look at the others (attention), and predicts from "
        "what it gathered. Here GPT-2 continues a sentence one token at a time; click any generated token to see "
        "the other tokens it could have written, with their probabilities.",
        {
            "tab": "text-generation",
            "prompt": "The transformer reads every word of a sentence at once, so",
            "decoding": "greedy",
            "max_new_tokens": "24",
            "run": "1",
        },
        needs=("text-generation",),
    ),  # fmt: skip
    Step(
        "Attention",
        "Each token builds its new meaning from a weighted mix of the others. The map shows those weights for every "
        "head of a layer: a row is one token, its colours say where it looked.",
        {
            "tab": "attention",
            "text": "The animal didn't cross the street because it was too tired.",
            "model": "minilm",
            "run": "1",
        },
        needs=("minilm",),
        offline_note="Runs on MiniLM, a real encoder installed with the hub: works offline.",
    ),  # fmt: skip
    Step(
        "Heads",
        "A layer has several heads, and each learns its own way of looking: one follows the previous word, another "
        "the sentence's end. Pick another head with the sliders, then switch heads off below the maps and see what "
        "changes.",
        {
            "tab": "attention",
            "text": "The cat sat on the mat, and then the cat slept.",
            "model": "minilm",
            "layer": "2",
            "head": "1",
            "run": "1",
        },
        needs=("minilm",),
        offline_note="Runs on MiniLM: works offline.",
    ),  # fmt: skip
    Step(
        "Layers and the data flow",
        "Tokens flow up through the layers, each adding to a running sum (the residual stream). Reading that sum "
        "with the word head after every layer shows when the model settles on its answer.",
        {"tab": "layers", "text": "The capital of France is", "model": "decoder", "run": "1"},
        needs=("text-generation",),
    ),  # fmt: skip
    Step(
        "Positional encoding",
        "Attention alone does not see word order, so each position adds its own vector. The sinusoid of the "
        "original paper gives every position a pattern of waves; nearby positions get similar patterns.",
        {"tab": "positional-encoding", "kind": "sinusoidal"},
        offline_note="The sinusoid is computed here, with no model: works offline.",
    ),  # fmt: skip
    Step(
        "Encoder and decoder",
        "A decoder (GPT-2) lets each token see only the tokens before it, so its attention maps are triangles; an "
        "encoder (BERT) sees the whole sentence both ways. Compare the two on the same sentence.",
        {"tab": "layers", "text": "The capital of France is", "model": "encoder", "run": "1"},
        needs=("fill-mask",),
    ),  # fmt: skip
    Step(
        "Pretrained models",
        "BERT was pretrained to fill in hidden words. Give it a blank and it ranks every word of its vocabulary; the "
        "bars are its probabilities.",
        {"tab": "fill-mask", "text": "Paris is the [MASK] of France.", "run": "1"},
        needs=("fill-mask",),
    ),  # fmt: skip
    Step(
        "Loading with Hugging Face",
        "Every tab loads its model with the library's own call, and its Code accordion shows the few lines that "
        "reproduce what you see. Open it under the generated text and run it in your own notebook.",
        {
            "tab": "text-generation",
            "prompt": "Hugging Face makes it easy to",
            "decoding": "greedy",
            "max_new_tokens": "16",
            "run": "1",
        },
        needs=("text-generation",),
    ),  # fmt: skip
    Step(
        "Fine-tuning",
        "A pretrained encoder learns a new task from a few hundred labelled reviews, live: watch the loss fall and "
        "the accuracy rise, then try your own sentences on the model you trained.",
        {"tab": "fine-tune", "run": "1"},
        needs=("fine-tune",),
        offline_note="Trains MiniLM, installed with the hub: works offline.",
    ),  # fmt: skip
    Step(
        "Vision",
        "A Vision Transformer cuts a photo into 16 x 16 patches and reads them like words. It names the photo; "
        "below, see which patches its class token attended to.",
        {"tab": "image-classification"},
        needs=("image-classification",),
        press="#image-classification-examples .gallery-item",
    ),  # fmt: skip
    Step(
        "Multimodal",
        "CLIP embeds photos and sentences in one space, so it can match a photo to labels it was never trained on. "
        "Type any labels and it ranks them.",
        {"tab": "zero-shot"},
        needs=("zero-shot",),
        press="#zero-shot-examples .gallery-item",
    ),  # fmt: skip
    Step(
        "Generating images",
        "A diffusion model starts from noise and removes a little of it at each step, guided by your prompt through "
        "cross-attention. Watch the image appear step by step.",
        {"tab": "text-to-image", "prompt": "a watercolor painting of a lighthouse at dawn", "run": "1"},
        needs=("text-to-image",),
    ),  # fmt: skip
    Step(
        "Scaling",
        "Bigger models trained on more text reach a lower loss, along a law you can fit: L(N) = E + A / N^alpha. "
        "The points were trained on this kind of machine; train one more model live and see whether the law "
        "predicted it.",
        {"tab": "scaling-laws", "size": "1 x 12", "tokens": "8192", "run": "1"},
        offline_note="Small models on a corpus installed with the hub: works offline.",
    ),  # fmt: skip
    Step(
        "Efficiency",
        "Generating token by token recomputes the past unless the keys and values are kept: the KV cache. Compare "
        "the time per token with and without it, then read the same text with sparse attention masks and with "
        "int8 weights.",
        {
            "tab": "efficient-attention",
            "text": "The history of the transformer begins with a paper about attention.",
            "new_tokens": "16",
        },
        needs=("text-generation",),
        press="#efficient-kv-run",
    ),  # fmt: skip
    Step(
        "Why this prediction",
        "Attention shows where a model looks, not what made it decide. Attribution scores each input word by how "
        "much it pushed the prediction; the other views find where in the layers it was decided, which heads copy, "
        "and what else the model could have said.",
        {"tab": "why-this-prediction", "text": "The capital of France is the city of"},
        needs=("text-generation",),
        press="#why-attribution-run",
    ),  # fmt: skip
)


def step_state(step: Step, states: dict[str, str]) -> str:
    """What the step says about its models: the worst state of the models it needs."""
    worst = ("missing", "offline", "download", "ready")
    state = min((states.get(model, "ready") for model in step.needs), key=worst.index, default="ready")
    if state == "ready" and step.offline_note:
        return step.offline_note
    return SAID[state]


def guide_steps(tab_ids: list[str]) -> list[Step]:
    """The steps whose view is a tab of this hub (--demos may leave some out)."""
    return [step for step in STEPS if step.query["tab"] in tab_ids]


@dataclass
class Guide:
    """What build_app wires after every tab exists: each step's button with the link it opens."""

    buttons: list[tuple[gr.Button, dict[str, str]]]


def start_here_tab(steps: list[Step], states: dict[str, str], titles: dict[str, str]) -> Guide:
    gr.Markdown(
        "**Start here.** The course in order, one step at a time: read the step, then open its view, which runs "
        "with prepared inputs. Previous and Next walk the steps, as on a slide.",
        elem_id="start-here-intro",
    )
    step_index = gr.Number(value=0, visible=False, precision=0)
    columns, buttons = [], []
    for number, step in enumerate(steps):
        with gr.Column(visible=number == 0, elem_classes="start-here-step") as column:
            gr.Markdown(f"### Step {number + 1} of {len(steps)}: {step.title}\n\n{step.text}")
            gr.Markdown(f"*{step_state(step, states)}*", elem_classes="start-here-state")
            button = gr.Button(
                step.button or f"Open {titles[step.query['tab']]}",
                variant="primary",
                elem_id=f"start-here-open-{number + 1}",
            )
        columns.append(column)
        buttons.append((button, step))
    with gr.Row():
        previous = gr.Button("Previous", elem_id="start-here-previous", interactive=False)
        next_ = gr.Button("Next", elem_id="start-here-next", interactive=len(steps) > 1)
    outline = "\n".join(f"{n}. {step.title}" for n, step in enumerate(steps, 1))
    with gr.Accordion("All steps", open=False):
        gr.Markdown(outline)

    def show(index: float) -> list:
        index = max(0, min(len(steps) - 1, int(index)))
        return [
            index,
            *[gr.Column(visible=n == index) for n in range(len(steps))],
            gr.Button(interactive=index > 0),
            gr.Button(interactive=index < len(steps) - 1),
        ]

    shown = [step_index, *columns, previous, next_]
    previous.click(lambda i: show(i - 1), step_index, shown, api_visibility="private")
    next_.click(lambda i: show(i + 1), step_index, shown, api_visibility="private")
    return Guide(
        [(button, {**step.query, **({"press": step.press} if step.press else {})}) for button, step in buttons]
    )


__all__ = ["START_HERE", "STEPS", "Guide", "Step", "guide_steps", "start_here_tab"]
