"""Text to image, the tab: the prompt, the settings, a live preview per step, Stop, the Code accordion."""

import threading
import time
from dataclasses import dataclass

import gradio as gr
from gradio import processing_utils
from PIL import Image

from demos.text_to_image.pipeline import (
    DEFAULTS,
    DEMO_ID,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    ImageSettings,
    check_settings,
    generate_frames,
    prompt_notes,
    reproduce_code,
)
from hub.checks import check_text
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, load_model, show_errors
from hub.visitors import StopSwitches, session_id

# A preview at most every quarter second: a fast model's steps come many times a second, and each preview costs a
# decode on the model thread and an image encoded and sent, CPU time taken from everyone else's requests.
PREVIEW_EVERY_S = 0.25

EXAMPLES = [
    ["A cinematic photo of a red fox in a snowy forest at sunrise"],
    ["An astronaut riding a horse on the moon, digital art"],
    ["A watercolor painting of a lighthouse on a cliff, stormy sea"],
    ["A cozy reading nook with a cat sleeping on a pile of books, warm light"],
]


def step_text(step: int, steps: int, done: bool = False) -> str:
    if done:
        return f"**Done:** {steps} step{'s' if steps > 1 else ''}"
    return f"**Step {step} of {steps}**"


@dataclass
class ImageResult:
    """The last finished generation, for the info line and the code accordion."""

    prompt: str
    settings: ImageSettings
    seconds: float
    images: list[Image.Image]  # all of them; the main output (and the API) holds the first


# The stop switches of the generations running now, per visitor, so Stop ends only its own visitor's image.
stop_switches = StopSwitches()


def text_to_image_tab(store: ModelStore) -> None:
    gr.Markdown(
        "A diffusion model starts from random noise and removes a little of it at every **step**, steered by the "
        "prompt through a transformer text encoder. `sd-turbo` was distilled to draw in a single step; with more "
        "steps, tick *Show the steps* to watch the noise become a picture."
    )
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(
                label="Prompt",
                lines=3,
                value=EXAMPLES[0][0],
                max_length=MAX_PROMPT_CHARS,
                elem_id="text-to-image-prompt",
            )
            negative_prompt = gr.Textbox(
                label="Negative prompt (what to avoid; used with guidance above 1)", max_length=MAX_PROMPT_CHARS
            )
            with gr.Row():
                run = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            with gr.Accordion("Settings", open=True):
                steps = gr.Slider(
                    1,
                    MAX_STEPS,
                    DEFAULTS.steps,
                    step=1,
                    label="Steps (sd-turbo: 1 to 4)",
                    elem_id="text-to-image-steps",
                )
                guidance_scale = gr.Slider(
                    0, MAX_GUIDANCE, DEFAULTS.guidance_scale, step=0.5, label="Guidance scale (sd-turbo: 0; others: 7)"
                )
                with gr.Row():
                    width, height = (
                        gr.Slider(
                            MIN_SIDE, MAX_SIDE, value, step=8, label=side, elem_id=f"text-to-image-{side.lower()}"
                        )
                        for side, value in (("Width", DEFAULTS.width), ("Height", DEFAULTS.height))
                    )
                with gr.Row():
                    seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    num_images = gr.Slider(1, MAX_IMAGES, value=DEFAULTS.num_images, step=1, label="Number of images")
                show_steps = gr.Checkbox(value=True, label="Show the steps (decoded with the tiny autoencoder)")
                gr.Markdown(
                    f"One request may cost up to {store.settings.image_budget:g} steps of a 512x512 image "
                    "(images x steps x size; guidance above 1 counts twice), so that no visitor holds the model "
                    "for minutes."
                )
            examples = gr.Examples(EXAMPLES, inputs=[prompt])  # a click draws it: see the event below
            link_inputs(
                DEMO_ID,
                run=run,
                prompt=prompt,
                negative_prompt=negative_prompt,
                steps=steps,
                guidance_scale=guidance_scale,
                width=width,
                height=height,
                seed=seed,
                num_images=num_images,
                show_steps=show_steps,
            )
        with gr.Column():
            # Where the generation is, for the whole run: Gradio's progress bar comes and goes between frames.
            step_line = gr.Markdown(elem_id="text-to-image-step")
            image = gr.Image(
                label="Image",
                type="pil",
                format="png",
                height=560,
                buttons=["download", "fullscreen"],
                elem_id="text-to-image-image",
            )
            gallery = gr.Gallery(
                label="All images (image i uses seed + i)",
                format="png",
                columns=4,
                elem_id="text-to-image-gallery",
                preview=False,
                visible=False,
            )
            info = gr.Markdown(elem_id="text-to-image-info")
    code = code_accordion()
    last = gr.State()
    # The step line travels in a State, which the API leaves out: /text_to_image streams images only.
    step_state = gr.State("")
    # The event's concurrency limit counts handlers; these slots count pipeline threads, which a cancel leaves
    # running to the end of their step: the next generation waits for that step instead of running beside it.
    running_slots = threading.BoundedSemaphore(store.settings.diffusion_concurrency)

    @show_errors
    @off_model_thread  # its job runs the pipeline on the model thread, step by step
    def generate(prompt, negative_prompt=None, steps=DEFAULTS.steps, guidance_scale=DEFAULTS.guidance_scale,
                 width=DEFAULTS.width, height=DEFAULTS.height, seed=DEFAULTS.seed, num_images=DEFAULTS.num_images,
                 show_steps=True, request: gr.Request = None, progress=gr.Progress()):  # fmt: skip
        """Draw an image from a prompt with a diffusion model, streaming a preview after each denoising step.

        Args:
            prompt: What to draw, at most 2,000 characters (the text encoder reads its first 77 tokens); read exactly as given.
            negative_prompt: What to avoid; used only with guidance_scale above 1. Default empty.
            steps: Denoising steps, 1 to 50 (sd-turbo: 1 to 4). Default 1.
            guidance_scale: Classifier-free guidance, 0 to 20 (sd-turbo: 0; other models: about 7); above 1 each step runs the model twice. Default 0.
            width: Image width in pixels, 64 to 1024, snapped to a multiple of 8. Default 512.
            height: Image height in pixels, 64 to 1024, snapped to a multiple of 8. Default 512.
            seed: Seed of the starting noise, 0 to 2147483647: the same seed and settings draw the same image. Default 0.
            num_images: Images to draw, 1 to 4; image i uses seed + i. Default 1.
            show_steps: Stream a preview of the image after each step (decoded with the tiny autoencoder). Default true.

        Returns:
            A stream: an empty update when the job starts, then with show_steps one preview image per step but the last, then the finished image (PNG; the first one when several are drawn). A request costing more than the server's budget (images x steps x size, guidance counting twice) is refused with a message.
        """
        text = check_text(prompt, "Prompt", MAX_PROMPT_CHARS)
        generator = load_model(store, DEMO_ID, progress)
        settings, notes = check_settings(
            negative_prompt,
            steps,
            guidance_scale,
            width,
            height,
            seed,
            num_images,
            generator.size_multiple,
            store.settings.image_budget,
        )
        for note in notes + prompt_notes(generator, text):
            gr.Warning(note)
        if show_steps and generator.preview_decoder is None and settings.steps > 1:
            gr.Warning("This model has no tiny autoencoder, so the steps are not shown; the progress bar still is.")
        # An empty update first: Gradio can close (cancel) a handler only once it has yielded, so without this a
        # cancel that comes before the first step ends would leave the whole generation running.
        yield (
            gr.skip(),
            gr.skip(),
            f"Encoding the prompt ({settings.steps} step{'s' if settings.steps > 1 else ''} to go)",
        )
        start = time.perf_counter()
        with stop_switches.switch(session_id(request)) as stop_switch:
            progress((0, settings.steps), desc="Encoding the prompt")
            frames = generate_frames(generator, text, settings, stop_switch, bool(show_steps), running_slots,
                                     preview_every_s=PREVIEW_EVERY_S)  # fmt: skip
            for frame in frames:
                if frame.final:
                    result = ImageResult(text, settings, time.perf_counter() - start, frame.images)
                    yield frame.images[0], result, step_text(frame.steps, frame.steps, done=True)
                else:
                    progress((frame.step, frame.steps), desc=f"Denoising step {frame.step}/{frame.steps}")
                    # Yield at every step, a preview or (previews off) only the step line: a cancel or a visitor who
                    # leaves can close the handler only between two yields, so this stops the job within a step.
                    if frame.images:
                        yield preview_file(frame.images[0]), None, step_text(frame.step, frame.steps)
                    elif frame.step < frame.steps:  # the last step's image follows at once
                        yield gr.skip(), gr.skip(), step_text(frame.step, frame.steps)

    def preview_file(preview: Image.Image) -> str:
        """A step's preview saved as JPEG in Gradio's cache, where the image's own PNG would go: Gradio's PNG of a
        512x512 preview costs about 80 ms of CPU, four times a second, taken from the cores the model thread uses;
        a JPEG costs 1 ms. The final image stays a PNG."""
        return processing_utils.save_pil_to_cache(preview, image.GRADIO_CACHE, name="preview", format="jpeg")

    @show_errors
    @off_model_thread  # at once, not after someone's step
    def request_stop(request: gr.Request = None) -> None:  # ends the job after this step; a cancel waits for a frame
        stop_switches.stop_all(session_id(request))

    @show_errors
    def show_step(line: str) -> str:
        return line

    @show_errors
    def explain(result: ImageResult | None, line: str):
        if result is None:  # stopped (the step line says how far it got), or refused before it started
            running = line.startswith(("Encoding", "**Step"))
            return (f"Stopped. {line}".replace("**", "") if running else gr.skip()), gr.skip(), gr.skip()
        s = result.settings
        line = (
            f"{s.width}x{s.height} px, {s.steps} step{'s' if s.steps > 1 else ''}, guidance {s.guidance_scale:g}, "
            f"seed {s.seed}, {s.num_images} image{'s' if s.num_images > 1 else ''} in {result.seconds:.1f} s"
        )
        all_images = [(picture, f"seed {s.seed + i}") for i, picture in enumerate(result.images)]
        return (
            line,
            reproduce_code(store.get(DEMO_ID), result.prompt, s, store.dtype),
            gr.Gallery(value=all_images, visible=len(all_images) > 1),
        )

    # An example's click fills in the prompt first (its own event, which the page runs and applies before this one),
    # then draws it as the Generate button does: one event, so Stop, the queue and the info line apply to both.
    event = gr.on(
        [run.click, prompt.submit, examples.dataset.click],
        generate,
        [prompt, negative_prompt, steps, guidance_scale, width, height, seed, num_images, show_steps],
        [image, last, step_state],
        api_name="text_to_image",
        concurrency_limit=store.settings.diffusion_concurrency,
        concurrency_id=DEMO_ID,
        # Gradio's full progress overlay covered the image at every progress update, so the preview flashed blank
        # between steps: a minimal tracker (queue place, model loading, timer) sits on the step line instead.
        show_progress="minimal",
        show_progress_on=[step_line],
    )
    event.then(explain, [last, step_state], [info, code, gallery], api_visibility="private")
    # State values live on the server (a js function would read null): a small unqueued call shows each line.
    step_state.change(show_step, step_state, step_line, queue=False, show_progress="hidden", api_visibility="private")
    stop.click(request_stop, None, None, cancels=[event], queue=False, api_visibility="private")
