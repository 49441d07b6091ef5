"""Text to image, the model and the pure functions: load a pipeline, check the settings, draw frames step by step."""

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (
    AutoencoderTiny,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)
from PIL import Image

from hub import model_thread, tiny
from hub.checks import check_int, check_number, check_text
from hub.errors import HubError
from hub.jobs import Job, running_jobs
from hub.models import is_local
from hub.settings import Settings

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
    # The model's own index first: when it is missing, the error names the model, not its tiny autoencoder.
    AutoPipelineForText2Image.load_config(source)
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
    preview_every_s: float = 0.0,
) -> Iterator[Frame]:
    """Yield a Frame after every denoising step (with preview images if asked, at most one every `preview_every_s`)
    and a final Frame with the images.
    The pipeline runs as a job, on the model thread, which serves other visitors' work between two denoising steps;
    setting `stop`, or closing this iterator, ends it after the current step. With
    `slots`, the job waits for a free one and holds it until its thread has ended (see hub.jobs)."""
    prompt = check_text(prompt, "Prompt", MAX_PROMPT_CHARS)
    # A pipeline object of its own for this call: the scheduler and the pipeline keep per-call state, and
    # with diffusion_concurrency > 1 two calls run at once. The models themselves are shared, not copied.
    scheduler = generator.pipe.scheduler.from_config(generator.pipe.scheduler.config)
    pipe = AutoPipelineForText2Image.from_pipe(generator.pipe, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    decoder = generator.preview_decoder if previews else None
    frames: deque[Frame] = deque()  # every step's frame reaches the reader, however fast the steps go

    last_preview = -math.inf  # when the last preview was decoded

    def draw(job: Job) -> None:
        def on_step_end(pipeline: DiffusionPipeline, index: int, timestep, tensors: dict) -> dict:
            nonlocal last_preview
            model_thread.serve_waiting()  # others wait for one step of this image, not for all of it
            if job.should_stop():
                raise _Stopped
            done, total = index + 1, getattr(pipeline, "_num_timesteps", settings.steps)
            images = []
            due = time.monotonic() - last_preview >= preview_every_s
            if decoder is not None and done < total and due:  # the last step's picture is the final image, next
                last_preview = time.monotonic()
                latents = tensors["latents"].to(decoder.dtype)
                decoded = decoder.decode(latents / decoder.config.scaling_factor).sample
                images = pipeline.image_processor.postprocess(decoded, output_type="pil")
                model_thread.serve_waiting()  # and between the preview and the next step
            frames.append(Frame(done, total, images))
            job.post(done)
            return tensors

        def call_pipeline():
            with torch.inference_mode():
                return pipe(
                    prompt,
                    generator=settings.generators(),
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                    **settings.pipeline_kwargs(),
                )

        try:
            output = model_thread.run(call_pipeline)
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
