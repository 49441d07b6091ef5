"""The efficient-transformers tab: three views on the loaded GPT-2 (KV cache, sparse attention, quantization),
each run as a hub.jobs.Job (Stop, a client's cancel, a visitor who leaves and a time limit end it), and their
endpoints /kv_cache, /sparse_attention and /quantize."""

from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import gradio as gr

from demos.efficient_attention.decoder import DEMO_ID, MAX_CHARS, load_decoder
from demos.efficient_attention.figures import (
    kv_cache_figure,
    masks_figure,
    quantize_figure,
    timing_figure,
    top5_table,
)
from demos.efficient_attention.kv_cache import DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, cache_code, kv_cache
from demos.efficient_attention.quantize import GREEDY_TOKENS, quantize, quantize_code
from demos.efficient_attention.sparse import (
    DEFAULT_WINDOW,
    GLOBAL_TOKENS,
    MAX_WINDOW,
    PATTERN_NAMES,
    PATTERNS,
    attention_timing,
    every_pattern,
    sparse_attention,
    sparse_code,
)
from demos.language import text_generation_tab
from hub.demo import Demo
from hub.errors import HubError
from hub.jobs import Job, VisitorJobs
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors
from hub.visitors import session_id

TIME_LIMIT_S = 120  # no run of these views takes longer, whoever asked for it
TICK_S = 0.25  # how often a waiting handler yields, so that a cancel or a visitor who left can close it

DEFAULT_TEXT = (
    "The history of the city begins with a small harbour. Fishermen built the first houses along the river, and "
    "traders soon followed them. By the end of the century the harbour had become one of the busiest ports in the "
    "country, and the city had grown around it."
)
EXAMPLES = [
    [DEFAULT_TEXT],
    ["The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox"],
    ["In 1905, Albert Einstein published four papers that changed physics. The first explained"],
]

INTRO = """
**What you are looking at:** three ways to make a transformer cheaper, each measured live on the loaded GPT-2 (the
text-generation tab's model): keep what attention computed (**KV cache**), compute fewer attention scores
(**sparse attention**), store the weights in fewer bits (**quantization**). Every number is this machine's, now.
"""
KV_INTRO = """
**What you are looking at:** GPT-2 writes the same greedy continuation twice. With the cache it keeps every layer's
keys and values and reads only the new token at each step; without it (`use_cache=False`) it reads the whole text
again. Left: milliseconds per new token against its position; right: the cache's size, read from its own tensors.
"""
SPARSE_INTRO = f"""
**What you are looking at:** the text read by GPT-2 with its full causal attention and with sparse masks, each
given to the real model as a 4-D attention mask: a **sliding window** of w tokens, **strided** (the window and
every w-th token before it; Child et al. 2019) and **window + global** (the window and the text's first
{GLOBAL_TOKENS} tokens; Longformer, BigBird). Perplexity = exp(mean next-token loss): lower = the model predicts
the text better. A mask alone saves nothing (the model still computes every score, then drops some); the time
figure measures a kernel that computes only the band, against the full n × n scores, on this model's first layer.
"""
QUANTIZE_INTRO = f"""
**What you are looking at:** the same GPT-2 in float32, bfloat16 (where this CPU runs it fast) and with **int8**
weights (the blocks' linear layers, `torch.ao.quantization.quantize_dynamic`; GPT-2's Conv1D layers are first
rewritten as the nn.Linear they equal, because quantize_dynamic skips Conv1D; embeddings and the tied output head
stay float32). Size of the weights, speed of a greedy run of {GREEDY_TOKENS} tokens, the next-token top 5, and how
often each one's top token is float32's over float32's greedy continuation.
"""

# The runs of each visitor: their Stop button ends them.
visitor_jobs = VisitorJobs()


def run_job(work: Callable[[Job], Any], session: str, name: str, idle: Any) -> Iterator[Any]:
    """Run work(job) as a hub.jobs.Job, yielding `idle` while it runs (so Gradio can close this handler on a
    cancel or a visitor who left, which stops the job) and finally its result."""
    job = Job(TIME_LIMIT_S)
    box = []
    with visitor_jobs.running(session, job):
        with closing(job.run(lambda job: box.append(work(job)), name=name, update_every_s=TICK_S, heartbeat=True, on_model_thread=True)) as ticks:  # fmt: skip
            for _ in ticks:
                yield idle
    if not box:
        raise HubError("Stopped.")
    yield box[0]


def kv_summary(result: dict) -> str:
    same = (
        "**The two texts are identical**: the cache changes the cost, not the result."
        if result["same_text"]
        else "**The two texts differ** (rounding in a different order can flip a near tie)."
    )
    cached, uncached = result["ms_per_token_cached"], result["ms_per_token_uncached"]
    n = min(len(cached), len(uncached))
    # The first token reads the whole prompt in both runs: compare the later ones.
    later = slice(1, n) if n > 1 else slice(0, n)
    mean_cached = sum(cached[later]) / max(1, len(cached[later]))
    mean_uncached = sum(uncached[later]) / max(1, len(uncached[later]))
    saving = 100 * (1 - mean_cached / mean_uncached) if mean_uncached else 0.0
    return (
        f"{same} {len(cached)} new tokens after a prompt of {result['prompt_tokens']} tokens, {result['dtype']}. "
        f"After the first token: {mean_cached:.1f} ms per token with the cache, {mean_uncached:.1f} ms without "
        f"(**{saving:.0f}% less time**). The cache grew to **{result['cache_mb'][-1]:.2f} MB**.\n\n"
        f"> {result['text_cached']!r}"
    )


def sparse_summary(result: dict, timing: dict) -> str:
    full, sparse = result["perplexity_full"], result["perplexity_sparse"]
    change = 100 * (sparse / full - 1)
    share = 100 * result["scores_computed"] / result["scores_full"]
    speed = ""
    if timing["lengths"]:
        n = timing["lengths"][-1]
        speed = (
            f" At {n} tokens one layer's attention took {timing['ms_full'][-1]:.1f} ms with every score and "
            f"{timing['ms_window'][-1]:.1f} ms with the band of {result['window']}."
        )
    return (
        f"**{PATTERN_NAMES[result['pattern']]}**, window {result['window']}: perplexity **{sparse:.2f}** against "
        f"**{full:.2f}** with full attention ({change:+.1f}%), from **{share:.0f}%** of the causal scores "
        f"({result['scores_computed']:,} of {result['scores_full']:,} per head and layer).{speed}"
    )


def quantize_summary(result: dict) -> str:
    variants = result["variants"]
    base = variants["float32"]
    lines = [
        f"**{name}**: {v['mb']:.1f} MB ({100 * v['mb'] / base['mb']:.0f}% of float32), {v['tokens_per_s']:.1f} "
        f"tokens/s, top token as float32's at **{100 * v['agreement_with_float32']:.0f}%** of the "
        f"{result['greedy_tokens']} positions."
        for name, v in variants.items()
    ]
    lines += [f"*{note}*" for note in result["absent"].values()]
    return "\n\n".join(lines)


def efficient_attention_tab(store: ModelStore) -> None:
    gr.Markdown(INTRO)
    text = gr.Textbox(label="Text (read by all three views exactly as typed)", value=DEFAULT_TEXT, lines=3,
                      max_length=MAX_CHARS, elem_id="efficient-text")  # fmt: skip
    with gr.Tabs(overflow_behavior="wrap"):  # every view in the bar, none in a "..." menu
        with gr.Tab("KV cache", id="efficient-kv-cache"):
            gr.Markdown(KV_INTRO)
            with gr.Row():
                new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_NEW_TOKENS, step=1, label="New tokens")
                kv_run = gr.Button("Generate both ways", variant="primary", elem_id="efficient-kv-run")
                kv_stop = gr.Button("Stop", variant="stop")
            kv_examples = gr.Examples(EXAMPLES, inputs=[text], label="Examples: click one to run it")
            kv_text = gr.Markdown(elem_id="efficient-kv-summary")
            kv_plot = figure_image(
                label="Time per token and cache size", show_label=False, elem_id="efficient-kv-figure"
            )
            kv_code = code_accordion()
        with gr.Tab("Sparse attention", id="efficient-sparse"):
            gr.Markdown(SPARSE_INTRO)
            with gr.Row():
                pattern = gr.Radio([(PATTERN_NAMES[p], p) for p in PATTERNS], value=PATTERNS[0], label="Pattern")
                window = gr.Slider(1, MAX_WINDOW, value=DEFAULT_WINDOW, step=1, label="Window w (tokens)")
                sparse_run = gr.Button("Read with the mask", variant="primary", elem_id="efficient-sparse-run")
                sparse_stop = gr.Button("Stop", variant="stop")
            sparse_examples = gr.Examples(EXAMPLES, inputs=[text], label="Examples: click one to run it")
            sparse_text = gr.Markdown(elem_id="efficient-sparse-summary")
            masks_plot = figure_image(
                label="The masks and the perplexity under each", show_label=False, elem_id="efficient-masks"
            )
            timing_plot = figure_image(label="Cost as the text grows", show_label=False, elem_id="efficient-timing")
            sparse_code_box = code_accordion()
        with gr.Tab("Quantization", id="efficient-quantize"):
            gr.Markdown(QUANTIZE_INTRO)
            with gr.Row():
                quantize_run = gr.Button("Compare", variant="primary", elem_id="efficient-quantize-run")
                quantize_stop = gr.Button("Stop", variant="stop")
            quantize_examples = gr.Examples(EXAMPLES, inputs=[text], label="Examples: click one to run it")
            quantize_text = gr.Markdown(elem_id="efficient-quantize-summary")
            quantize_plot = figure_image(
                label="Size, speed, agreement", show_label=False, elem_id="efficient-quantize-figure"
            )
            top5 = gr.Dataframe(label="Next-token top 5 after the text (probability in percent)", interactive=False,
                                headers=["rank", "float32", "bfloat16", "int8"],
                                elem_id="efficient-top5")  # fmt: skip
            quantize_code_box = code_accordion()
    link_inputs(DEMO_ID, text=text, new_tokens=new_tokens, pattern=pattern, window=window)

    def loading(progress):
        return lambda message: progress(0, desc=message)

    @show_errors
    @off_model_thread  # each view's job runs on the model thread
    def show_kv(text, new_tokens, request: gr.Request = None, progress=gr.Progress()):
        yield gr.skip(), gr.skip(), gr.skip()  # from here on a cancel can close this handler
        generator = load_decoder(store, loading(progress))
        progress(0, desc="Generating with the cache, then without...")
        work = lambda job: kv_cache(generator, text, new_tokens, job)  # noqa: E731
        for result in run_job(work, session_id(request), "kv-cache", None):
            if result is None:
                yield gr.skip(), gr.skip(), gr.skip()
        code = cache_code(generator.source, generator.model.dtype, text, len(result["positions"]))
        yield kv_summary(result), kv_cache_figure(result), code

    @show_errors
    @off_model_thread
    def show_sparse(text, pattern, window, request: gr.Request = None, progress=gr.Progress()):
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        generator = load_decoder(store, loading(progress))
        progress(0, desc="Reading the text with each mask, then timing attention...")

        def work(job):
            result = sparse_attention(generator, text, pattern, window)
            return result, every_pattern(generator, text, window), attention_timing(generator, text, window, job)

        for done in run_job(work, session_id(request), "sparse-attention", None):
            if done is None:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        result, every, timing = done
        code = sparse_code(generator.source, generator.model.dtype, text, result["pattern"], result["window"])
        figure = masks_figure(every, result["pattern"], len(result["tokens"]))
        yield sparse_summary(result, timing), figure, timing_figure(timing, result["window"]), code

    @show_errors
    @off_model_thread
    def show_quantize(text, request: gr.Request = None, progress=gr.Progress()):
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        generator = load_decoder(store, loading(progress))
        progress(0, desc="Building the copies (first use) and running each...")
        work = lambda job: quantize(generator, text, job)  # noqa: E731
        for result in run_job(work, session_id(request), "quantize", None):
            if result is None:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        yield (
            quantize_summary(result),
            quantize_figure(result),
            top5_table(result),
            quantize_code(generator.source, text),
        )

    @show_errors
    @off_model_thread  # at once, not after someone's step
    def request_stop(request: gr.Request = None):
        """Stop: the visitor's run ends at its next step."""
        visitor_jobs.stop(session_id(request), wait_s=0)

    views = (
        (kv_run, kv_stop, kv_examples, show_kv, [text, new_tokens], [kv_text, kv_plot, kv_code]),
        (sparse_run, sparse_stop, sparse_examples, show_sparse, [text, pattern, window],
         [sparse_text, masks_plot, timing_plot, sparse_code_box]),
        (quantize_run, quantize_stop, quantize_examples, show_quantize, [text],
         [quantize_text, quantize_plot, top5, quantize_code_box]),
    )  # fmt: skip
    for run, stop, examples, handler, inputs, outputs in views:
        runs = [
            run.click(handler, inputs, outputs, concurrency_id=DEMO_ID, api_visibility="private"),
            # A clicked example fills the text, then runs the view (an event Stop can cancel).
            examples.load_input_event.then(handler, inputs, outputs, concurrency_id=DEMO_ID, api_visibility="private"),
        ]
        stop.click(request_stop, None, None, cancels=runs, queue=False, api_visibility="private")
    register_api(store)


def register_api(store: ModelStore) -> None:
    """/kv_cache, /sparse_attention and /quantize: the numbers behind the views, as JSON. Each streams an empty
    value while it runs (a client's cancel then stops the run) and the result last."""

    def kv_cache_api(text: str, new_tokens: int = DEFAULT_NEW_TOKENS, request: gr.Request = None) -> dict:
        """GPT-2 (the text-generation model) continues the text greedily twice: with the KV cache and without it (use_cache=False). Measured on the server, token by token.

        Args:
            text: The prompt, at most 128 tokens, read exactly as given.
            new_tokens: How many tokens to write, 1 to 128 (prompt + new tokens within the model's context). Default 48.

        Returns:
            {"positions": the position of each new token in the whole text, "ms_per_token_cached": milliseconds per new token with the cache (the first also reads the prompt), "ms_per_token_uncached": the same without the cache, "cache_mb": the cache's size in MB (10^6 bytes) after each new token, read from its key and value tensors, "same_text": true when both runs wrote the same tokens, "text_cached", "text_uncached", "prompt_tokens", "dtype"}. Streams null while it runs, then the result.
        """
        generator = load_decoder(store)
        yield from run_job(
            lambda job: kv_cache(generator, text, new_tokens, job), session_id(request), "kv-cache", None
        )

    def sparse_attention_api(text: str, pattern: str = "sliding_window", window: int = DEFAULT_WINDOW,
                             request: gr.Request = None) -> dict:  # fmt: skip
        """The text's perplexity under GPT-2's full causal attention and under a sparse attention mask given to the real model.

        Args:
            text: The text, 2 to 256 tokens, read exactly as given.
            pattern: "sliding_window" (each token reads the last `window` tokens, itself included), "strided" (those and every window-th token before them) or "window_global" (those and the text's first 2 tokens). Default "sliding_window".
            window: The window w in tokens, 1 to 256. Default 8.

        Returns:
            {"pattern", "window", "perplexity_full": exp(mean next-token loss) with full causal attention, "perplexity_sparse": the same with the mask, "mask": n x n list of 0/1 (row = query token, column = key token, 1 = read), "scores_computed": the 1s in the mask (query-key scores per head and layer), "scores_full": n(n+1)/2, the causal pairs, "tokens"}. Streams null while it runs, then the result.
        """
        generator = load_decoder(store)
        work = lambda job: sparse_attention(generator, text, pattern, window)  # noqa: E731
        yield from run_job(work, session_id(request), "sparse-attention", None)

    def quantize_api(text: str, request: gr.Request = None) -> dict:
        """GPT-2 (the text-generation model) in float32, bfloat16 (where the CPU runs it fast) and with int8 weights, side by side.

        Args:
            text: The prompt, at most 192 tokens, read exactly as given.

        Returns:
            {"variants": {"float32" | "bfloat16" | "int8": {"mb": size of the weights in MB (10^6 bytes), "tokens_per_s": speed of a greedy run of 64 new tokens, "top5": [[token, probability], ...] the next-token top 5 after the text, "agreement_with_float32": the fraction (0 to 1) of the 64 positions of float32's greedy continuation where this variant's top token is float32's}}, "absent": {variant: why it is left out}, "prompt_tokens", "greedy_tokens", "float32_continuation"}. Streams null while it runs, then the result.
        """
        generator = load_decoder(store)
        yield from run_job(lambda job: quantize(generator, text, job), session_id(request), "quantize", None)

    for fn, name in (
        (kv_cache_api, "kv_cache"),
        (sparse_attention_api, "sparse_attention"),
        (quantize_api, "quantize"),
    ):
        gr.api(show_errors(off_model_thread(fn)), api_name=name, concurrency_id=DEMO_ID)


DEMO = Demo(
    id=DEMO_ID,
    title="Efficient transformers",
    default_model="",
    load=None,
    build_tiny=None,
    tab=efficient_attention_tab,
    uses=(text_generation_tab.DEMO,),
)
