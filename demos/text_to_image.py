"""Text to image: a distilled Stable Diffusion model turns noise into a picture of the prompt, step by step."""

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch
from diffusers import (
    AutoencoderTiny,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)
from PIL import Image

from hub import tiny
from hub.checks import check_int, check_number, check_text
from hub.demo import Demo
from hub.errors import HubError
from hub.jobs import Job, running_jobs
from hub.links import link_inputs
from hub.models import ModelStore, is_local
from hub.settings import Settings
from hub.ui import code_accordion, load_model, show_errors
from hub.visitors import StopSwitches, session_id

DEMO_ID = "text-to-image"
DEFAULT_MODEL = "stabilityai/sd-turbo"
# TAESD decodes Stable Diffusion 1.x/2.x latents in a fraction of the full VAE's time, at slightly lower quality.
TINY_AUTOENCODER = "madebyollin/taesd"
TINY_AUTOENCODERS = {
    "stabilityai/sd-turbo": TINY_AUTOENCODER,
    "stabilityai/stable-diffusion-2-1-base": TINY_AUTOENCODER,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": TINY_AUTOENCODER,
}
TINY_AUTOENCODER_FOLDER = "taesd"  # a local pipeline folder may carry its tiny autoencoder in this subfolder

MAX_PROMPT_CHARS = 2_000  # the text encoder reads 77 tokens anyway
MAX_STEPS = 50
MAX_GUIDANCE = 20.0
MIN_SIDE, MAX_SIDE = 64, 1024  # pixels; larger images take minutes on a CPU
MAX_IMAGES = 4
MAX_SEED = 2**31 - 1
TIME_LIMIT_S = 600  # a generation never runs longer than this, whoever asked for it (the budget comes first)
DEFAULT_BUDGET = Settings.image_budget  # steps of one 512x512 image a request may cost; --image-budget sets it


# ---------------------------------------------------------------------------------------------------------
# The model


@dataclass
class ImageGenerator:
    pipe: DiffusionPipeline
    preview_decoder: AutoencoderTiny | None  # the tiny autoencoder, when there is one for this model
    source: str
    tiny_autoencoder_source: str | None

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (8 for Stable Diffusion: the autoencoder halves 3 times)."""
        return max(8, getattr(self.pipe, "vae_scale_factor", 8))


def tiny_autoencoder_for(source: str) -> str | None:
    """Where the tiny autoencoder for a model lives: a known Hub repo, or a `taesd` folder inside a local model."""
    if is_local(source):
        folder = Path(source).expanduser() / TINY_AUTOENCODER_FOLDER
        return str(folder) if (folder / "config.json").exists() else None
    return TINY_AUTOENCODERS.get(source)


def hub_repos(source: str) -> list[str]:
    tiny_source = tiny_autoencoder_for(source)
    return [source] + ([tiny_source] if tiny_source and not is_local(tiny_source) else [])


def load_image_generator(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> ImageGenerator:
    tiny_source = tiny_autoencoder_for(source)
    components = {}
    if tiny_source:
        # Passed to from_pretrained, the tiny autoencoder replaces the full one, which is then never loaded.
        components["vae"] = AutoencoderTiny.from_pretrained(tiny_source, dtype=dtype, use_safetensors=True)
    pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype, use_safetensors=True, **components)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return ImageGenerator(pipe, components.get("vae"), source, tiny_source)


def build_tiny_pipeline(folder: Path) -> None:
    """A Stable Diffusion pipeline of the sd-turbo kind with random weights, plus a tiny autoencoder in taesd/."""
    tiny.build_stable_diffusion(folder, folder / TINY_AUTOENCODER_FOLDER)


# ---------------------------------------------------------------------------------------------------------
# The work: checked settings, generation in a thread that reports every step, and the code that reproduces it


@dataclass(frozen=True)
class ImageSettings:
    negative_prompt: str = ""
    steps: int = 1
    guidance_scale: float = 0.0  # sd-turbo was distilled to work without classifier-free guidance
    width: int = 512
    height: int = 512
    seed: int = 0  # image i of a batch uses seed + i, so it equals the single image made with seed + i
    num_images: int = 1

    @property
    def uses_guidance(self) -> bool:
        """Diffusers runs classifier-free guidance (and so reads the negative prompt) only above 1."""
        return self.guidance_scale > 1.0

    @property
    def cost(self) -> float:
        """What the request costs, in denoising steps of one 512x512 image: guidance runs the model twice a step."""
        return self.width * self.height / 512**2 * self.steps * self.num_images * (2 if self.uses_guidance else 1)

    def pipeline_kwargs(self) -> dict:
        """The arguments of the diffusers pipeline call these settings stand for (without prompt and generator)."""
        kwargs = {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "width": self.width,
            "height": self.height,
        }
        if self.negative_prompt and self.uses_guidance:
            kwargs["negative_prompt"] = self.negative_prompt
        if self.num_images > 1:
            kwargs["num_images_per_prompt"] = self.num_images
        return kwargs

    def generators(self) -> torch.Generator | list[torch.Generator]:
        """CPU random generators: the same seed gives the same starting noise on any device."""
        if self.num_images == 1:
            return torch.Generator().manual_seed(self.seed)
        return [torch.Generator().manual_seed(self.seed + i) for i in range(self.num_images)]


DEFAULTS = ImageSettings()  # the one source of each default: sliders, the endpoint, check_settings


def snap(value: float, multiple: int) -> int:
    """The nearest multiple of `multiple` (the size the model accepts), within [MIN_SIDE, MAX_SIDE]."""
    return min(MAX_SIDE, max(MIN_SIDE, int(value / multiple + 0.5) * multiple))  # halves round up


def check_settings(
    negative_prompt: str = "",
    steps: float = DEFAULTS.steps,
    guidance_scale: float = DEFAULTS.guidance_scale,
    width: float = DEFAULTS.width,
    height: float = DEFAULTS.height,
    seed: float = DEFAULTS.seed,
    num_images: float = DEFAULTS.num_images,
    size_multiple: int = 8,
    budget: float = DEFAULT_BUDGET,
) -> tuple[ImageSettings, list[str]]:
    """Checked settings, and notes for the person about what was adjusted (sizes snapped, unused negative prompt).
    A request costing more than `budget` steps of a 512x512 image is refused: one visitor never holds the only
    slot for minutes."""
    width_in = check_number(width, "Width", MIN_SIDE, MAX_SIDE)
    height_in = check_number(height, "Height", MIN_SIDE, MAX_SIDE)
    settings = ImageSettings(
        negative_prompt=check_text(negative_prompt, "Negative prompt", MAX_PROMPT_CHARS, allow_empty=True),
        steps=check_int(steps, "Steps", 1, MAX_STEPS),
        guidance_scale=check_number(guidance_scale, "Guidance scale", 0.0, MAX_GUIDANCE),
        width=snap(width_in, size_multiple),
        height=snap(height_in, size_multiple),
        seed=check_int(seed, "Seed", 0, MAX_SEED),
        num_images=check_int(num_images, "Number of images", 1, MAX_IMAGES),
    )
    if settings.cost > budget:
        guided = " x 2 for guidance" if settings.uses_guidance else ""
        raise HubError(
            f"This request costs as much as {settings.cost:g} steps of a 512x512 image ({settings.num_images} "
            f"image(s) x {settings.steps} step(s) at {settings.width}x{settings.height}{guided}); this server allows "
            f"{budget:g} per request. Use fewer steps or images, or a smaller size."
        )
    notes = []
    if (settings.width, settings.height) != (width_in, height_in):
        notes.append(
            f"Size {width_in:g}x{height_in:g} was snapped to {settings.width}x{settings.height} "
            f"(a multiple of {size_multiple})."
        )
    if settings.negative_prompt and not settings.uses_guidance:
        notes.append("The negative prompt is only used with a guidance scale above 1.")
    return settings, notes


def prompt_notes(generator: ImageGenerator, prompt: str) -> list[str]:
    """Warn when the text encoder will not read the whole prompt (CLIP reads 77 tokens)."""
    tokenizer = getattr(generator.pipe, "tokenizer", None)
    if tokenizer is None:
        return []
    tokens = len(tokenizer(prompt).input_ids)
    if tokens > tokenizer.model_max_length:
        return [f"The prompt has {tokens} tokens; the text encoder reads the first {tokenizer.model_max_length}."]
    return []


@dataclass
class Frame:
    """What the generation has to show after a denoising step, or at the end."""

    step: int  # denoising steps done
    steps: int  # denoising steps in all
    images: list[Image.Image] = field(default_factory=list)  # a preview of each image, or the final images
    final: bool = False


class _Stopped(Exception):
    """Raised inside the step callback to end the pipeline call at once (no final decode of a stopped image)."""


# Generation threads running now; tests read it to check that Stop really stops them.
running_generations = running_jobs


def generate_frames(
    generator: ImageGenerator,
    prompt: str,
    settings: ImageSettings = ImageSettings(),
    stop: threading.Event | None = None,
    previews: bool = True,
    slots: threading.Semaphore | None = None,
) -> Iterator[Frame]:
    """Yield a Frame after every denoising step (with preview images if asked) and a final Frame with the images.
    The pipeline runs as a job; setting `stop`, or closing this iterator, ends it after the current step. With
    `slots`, the job waits for a free one and holds it until its thread has ended (see hub.jobs)."""
    prompt = check_text(prompt, "Prompt", MAX_PROMPT_CHARS)
    # A pipeline object of its own for this call: the scheduler and the pipeline keep per-call state, and
    # with diffusion_concurrency > 1 two calls run at once. The models themselves are shared, not copied.
    scheduler = generator.pipe.scheduler.from_config(generator.pipe.scheduler.config)
    pipe = AutoPipelineForText2Image.from_pipe(generator.pipe, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    decoder = generator.preview_decoder if previews else None
    frames: deque[Frame] = deque()  # every step's frame reaches the reader, however fast the steps go

    def draw(job: Job) -> None:
        def on_step_end(pipeline: DiffusionPipeline, index: int, timestep, tensors: dict) -> dict:
            if job.should_stop():
                raise _Stopped
            done, total = index + 1, getattr(pipeline, "_num_timesteps", settings.steps)
            images = []
            if decoder is not None and done < total:  # the last step's picture is the final image, decoded next
                latents = tensors["latents"].to(decoder.dtype)
                decoded = decoder.decode(latents / decoder.config.scaling_factor).sample
                images = pipeline.image_processor.postprocess(decoded, output_type="pil")
            frames.append(Frame(done, total, images))
            job.post(done)
            return tensors

        try:
            with torch.inference_mode():
                output = pipe(
                    prompt,
                    generator=settings.generators(),
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                    **settings.pipeline_kwargs(),
                )
        except _Stopped:
            return
        frames.append(Frame(settings.steps, settings.steps, list(output.images), final=True))
        job.post(settings.steps)

    job = Job(TIME_LIMIT_S, stop, slots)
    with closing(job.run(draw, name="text-to-image")) as steps:  # closing this generator stops the job at once
        for _ in steps:
            while frames:
                yield frames.popleft()
    if job.out_of_time():
        raise HubError(f"The generation took longer than {TIME_LIMIT_S} s and was stopped; try fewer steps.")


def text_to_image(
    generator: ImageGenerator, prompt: str, settings: ImageSettings = ImageSettings()
) -> list[Image.Image]:
    """The finished images, without previews."""
    images: list[Image.Image] = []
    for frame in generate_frames(generator, prompt, settings, previews=False):
        images = frame.images
    return images


def reproduce_code(generator: ImageGenerator, prompt: str, settings: ImageSettings, dtype: torch.dtype) -> str:
    args = "".join(f", {key}={value!r}" for key, value in settings.pipeline_kwargs().items())
    if settings.num_images == 1:
        seed_line = f"generator = torch.Generator().manual_seed({settings.seed})"
    else:
        seed_line = (
            f"generator = [torch.Generator().manual_seed({settings.seed} + i) for i in range({settings.num_images})]"
        )
    if generator.tiny_autoencoder_source:
        vae_line = (
            f"vae = AutoencoderTiny.from_pretrained({generator.tiny_autoencoder_source!r}, dtype={dtype})"
            "  # fast decoding\n"
        )
        load_args = "vae=vae, "
    else:
        vae_line, load_args = "", ""
    return f"""import torch
from diffusers import AutoencoderTiny, AutoPipelineForText2Image

{vae_line}pipe = AutoPipelineForText2Image.from_pretrained({generator.source!r}, {load_args}dtype={dtype}, use_safetensors=True)
{seed_line}
images = pipe({prompt!r}{args}, generator=generator).images
images[0].save("image.png")
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

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
            frames = generate_frames(generator, text, settings, stop_switch, bool(show_steps), running_slots)
            for frame in frames:
                if frame.final:
                    result = ImageResult(text, settings, time.perf_counter() - start, frame.images)
                    yield frame.images[0], result, step_text(frame.steps, frame.steps, done=True)
                else:
                    progress((frame.step, frame.steps), desc=f"Denoising step {frame.step}/{frame.steps}")
                    # Yield at every step, a preview or (previews off) only the step line: a cancel or a visitor who
                    # leaves can close the handler only between two yields, so this stops the job within a step.
                    if frame.images:
                        yield frame.images[0], None, step_text(frame.step, frame.steps)
                    elif frame.step < frame.steps:  # the last step's image follows at once
                        yield gr.skip(), gr.skip(), step_text(frame.step, frame.steps)

    @show_errors
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


DEMO = Demo(
    id=DEMO_ID,
    title="Text to image (diffusion)",
    default_model=DEFAULT_MODEL,
    load=load_image_generator,
    build_tiny=build_tiny_pipeline,
    tab=text_to_image_tab,
    hub_repos=hub_repos,
)
