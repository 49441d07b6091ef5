"""The text generation tab: a prompt and the sampling settings, the continuation streamed as it is written, Stop, and
how likely each generated token was (demos/language/text_generation.py does the work)."""

import gradio as gr
import pandas as pd

from demos.language.text_generation import (
    ALTERNATIVE_COLUMNS,
    DECODING,
    DEFAULT_MODEL,
    DEFAULTS,
    DEMO_ID,
    MAX_PROMPT_CHARS,
    TIME_LIMIT_S,
    Generation,
    TokenProbabilities,
    build_tiny_gpt2,
    check_settings,
    configured_context,
    generate_stream,
    load_text_generator,
    most_new_tokens,
    reproduce_code,
    run_summary,
    stopped_generation,
    token_probabilities,
)
from hub.checks import check_text
from hub.continuous_batching import MAX_ROWS
from hub.demo import Demo
from hub.jobs import Job, VisitorJobs
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, load_model, show_errors
from hub.visitors import session_id

EXAMPLES = [
    ["Once upon a time, in a small village by the sea,"],
    ["The three most important ideas in machine learning are"],
    ["Attention is all you need because"],
    ["Dear diary, today I finally understood transformers:"],
]

# The generations running now, per visitor: Stop ends its own visitor's, waits for its last token and says where.
visitor_jobs = VisitorJobs()


def text_generation_tab(store: ModelStore) -> None:
    gr.Markdown(
        "GPT-2 writes by predicting one token at a time. Sampling settings change which token it picks: "
        "**temperature** sharpens or flattens the odds, **top-k** and **top-p** cut off unlikely tokens."
    )
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", lines=4, value=EXAMPLES[0][0], max_length=MAX_PROMPT_CHARS,
                                elem_id="generation-prompt")  # fmt: skip
            with gr.Row():
                run = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            with gr.Accordion("Sampling settings", open=True):
                most = most_new_tokens(configured_context(store.source(DEMO_ID)))
                max_new_tokens = gr.Slider(1, most, value=DEFAULTS.max_new_tokens, step=1, label="Max new tokens")
                decoding = gr.Radio(list(DECODING), value=DEFAULTS.decoding,
                                    label="Decoding (greedy = always the top token)")  # fmt: skip
                temperature = gr.Slider(0.05, 2.0, value=DEFAULTS.temperature, step=0.05, label="Temperature")
                top_k = gr.Slider(0, 200, value=DEFAULTS.top_k, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=DEFAULTS.top_p, step=0.05, label="Top-p")
                repetition_penalty = gr.Slider(1.0, 2.0, value=DEFAULTS.repetition_penalty, step=0.05,
                                               label="Repetition penalty")  # fmt: skip
                seed = gr.Number(value=DEFAULTS.seed, precision=0, label="Seed (same seed + settings = same text)")
            examples = gr.Examples(EXAMPLES, inputs=[prompt], label="Examples: click one to generate from it")
        with gr.Column():
            output = gr.Textbox(label="Continuation", lines=10, elem_id="generation-output")
            status = gr.Markdown(elem_id="generation-status")
            tokens_view = gr.HighlightedText(
                label="Generated tokens, coloured by the probability the model gave each (click one)",
                elem_id="generation-tokens",
            )
            alternatives = gr.Dataframe(
                pd.DataFrame(columns=ALTERNATIVE_COLUMNS),
                label="The model's top choices for the selected token (percent)",
                interactive=False,
                elem_id="generation-alternatives",
            )
    code = code_accordion()
    link_inputs(DEMO_ID, run=run, prompt=prompt, max_new_tokens=max_new_tokens, decoding=decoding, temperature=temperature,
                top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)  # fmt: skip
    generation = gr.State()  # the last Generation: exact token ids for the probability view
    scored = gr.State()  # its TokenProbabilities, for clicks on tokens

    settings_inputs = [max_new_tokens, decoding, temperature, top_k, top_p, repetition_penalty, seed]
    explain_inputs, explained = (
        [generation, *settings_inputs, prompt],
        [tokens_view, scored, alternatives, code, status],
    )

    @show_errors
    @off_model_thread  # its job hands the model thread the generation, a token at a time
    def generate(prompt, max_new_tokens=DEFAULTS.max_new_tokens, decoding=DEFAULTS.decoding,
                 temperature=DEFAULTS.temperature, top_k=DEFAULTS.top_k, top_p=DEFAULTS.top_p,
                 repetition_penalty=DEFAULTS.repetition_penalty, seed=DEFAULTS.seed, request: gr.Request = None,
                 progress=gr.Progress()):  # fmt: skip
        """Continue a prompt with the loaded GPT-2 model, streaming the text as it is written.

        Args:
            prompt: the text to continue (1 to 20000 characters, taken exactly as typed; a prompt longer than the context loses its first tokens).
            max_new_tokens: how many tokens to add, 1 to 512 and below the model's context (default 50).
            decoding: "sampling" (draw each token from the model's probabilities) or "greedy" (always the most likely token); default "sampling".
            temperature: sampling only, 0.05 to 2.0: below 1 sharpens the probabilities, above 1 flattens them (default 0.8).
            top_k: sampling only, 0 to 1000: draw only from the k most likely tokens, 0 = no cut (default 50).
            top_p: sampling only, 0.05 to 1.0: draw only from the most likely tokens whose probabilities add up to p (default 0.95).
            repetition_penalty: 1.0 to 2.0: divides the odds of tokens already in the text, 1.0 = off (default 1.0).
            seed: 0 to 2147483647: the same seed and settings give the same text (default 0).
        Returns:
            The continuation (without the prompt), streamed: an empty text first, then the text so far a few times a second, the whole continuation last.
        """
        settings = check_settings(max_new_tokens, decoding, temperature, top_k, top_p, repetition_penalty, seed)
        text = check_text(prompt, "Prompt", MAX_PROMPT_CHARS)
        # An update first: Gradio can close (cancel) a handler only once it has yielded, so without it a cancel that
        # comes while the model loads or the prompt is read would leave the whole generation running.
        yield "", None
        generator = load_model(store, DEMO_ID, progress)
        with visitor_jobs.running(session_id(request), Job(TIME_LIMIT_S)) as job:
            for partial in generate_stream(generator, text, settings, job=job):
                job.shown = partial
                if partial.cut_tokens and not partial.new_ids:
                    gr.Warning(f"The prompt was cut: its first {partial.cut_tokens} tokens were dropped to fit.")
                if partial.new_ids:  # the State is written once, at the end: less work per update
                    yield partial.text, gr.skip()
        yield partial.text, partial

    @show_errors
    @off_model_thread  # it waits for the generation's last step, which runs on the model thread
    def request_stop(request: gr.Request = None):
        """Stop: the generation ends after its current token; the text so far stays, and the line says where."""
        shown = [job for job in visitor_jobs.stop(session_id(request)) if job.shown is not None]
        if not shown:  # nothing running, or not started yet: the cancel alone ends it
            return gr.skip(), gr.skip(), gr.skip()
        stopped = stopped_generation(shown[-1], store.get(DEMO_ID).tokenizer)
        return stopped.text, stopped, run_summary(stopped)

    @show_errors
    def explain(last: Generation | None, max_new_tokens, decoding, temperature, top_k, top_p, repetition_penalty, seed,
                prompt):  # fmt: skip
        if last is None:
            return [], None, None, gr.skip(), gr.skip()
        settings = check_settings(max_new_tokens, decoding, temperature, top_k, top_p, repetition_penalty, seed)
        code_text = reproduce_code(store.source(DEMO_ID), prompt, settings, store.dtype, last.cut_tokens)
        if not last.new_ids:
            return [], None, None, code_text, run_summary(last)
        result = token_probabilities(store.get(DEMO_ID), last, settings)
        highlighted = [(token, round(p, 3)) for token, p in zip(result.tokens, result.probabilities)]
        return highlighted, result, result.alternatives[0], code_text, run_summary(last)

    def fit_slider_to_configured_model():  # on page load: the config on disk may be new; nothing is loaded
        return gr.Slider(maximum=most_new_tokens(configured_context(store.source(DEMO_ID))))

    def fit_slider_to_loaded_model():
        return gr.Slider(maximum=most_new_tokens(store.get(DEMO_ID).context))  # loaded: the run just used it

    @show_errors
    def show_alternatives(result: TokenProbabilities | None, evt: gr.SelectData):
        if result is None or not isinstance(evt.index, int) or not 0 <= evt.index < len(result.alternatives):
            return None
        return result.alternatives[evt.index]

    def run_after(trigger, **api) -> gr.events.Dependency:
        """The generation and what follows it, after a trigger (the button or Enter, or a clicked example)."""
        # Everyone generating at once shares the decode steps (hub.continuous_batching), up to its rows.
        event = trigger(generate, [prompt, *settings_inputs], [output, generation], concurrency_limit=MAX_ROWS,
                        concurrency_id=DEMO_ID, **api)  # fmt: skip
        event.success(explain, explain_inputs, explained, api_visibility="private")
        event.success(fit_slider_to_loaded_model, None, max_new_tokens, queue=False, api_visibility="private")
        return event

    # A clicked example fills the prompt, then runs the same handler as the button (what run_on_click does, but
    # keeping the event, so that Stop reaches it and the token view follows it).
    runs = [run_after(lambda *args, **kwargs: gr.on([run.click, prompt.submit], *args, **kwargs), api_name="generate"),
            run_after(examples.load_input_event.then, api_visibility="private")]  # fmt: skip
    stopped = stop.click(request_stop, None, [output, generation, status], cancels=runs, queue=False,
                         api_visibility="private")  # fmt: skip
    stopped.success(explain, explain_inputs, explained, api_visibility="private")  # the stopped run's tokens
    # The slider's maximum follows the model's context: on page load from its config, after a run from the model.
    gr.on(None, fit_slider_to_configured_model, None, max_new_tokens, queue=False, api_visibility="private")
    # A new run clears the last run's token view and line at once.
    gr.on([run.click, prompt.submit, examples.dataset.click], lambda: ([], None, ""), None,
          [tokens_view, alternatives, status], queue=False, api_visibility="private")  # fmt: skip
    tokens_view.select(show_alternatives, scored, alternatives, api_visibility="private")


DEMO = Demo(
    id=DEMO_ID,
    title="Text generation (GPT-2)",
    default_model=DEFAULT_MODEL,
    load=load_text_generator,
    build_tiny=build_tiny_gpt2,
    tab=text_generation_tab,
)
