"""Text to image: a distilled Stable Diffusion model turns noise into a picture of the prompt, step by step.

    pipeline.py  the model (a diffusers pipeline + a tiny autoencoder for previews), the settings and their checks,
                 the generation as frames, one per denoising step, and the Code accordion's code
    tab.py       the tab and its endpoint /text_to_image

Below: the names other modules, the tests and the benchmark use.
"""

from demos.text_to_image.pipeline import (
    DEFAULT_MODEL,
    DEFAULTS,
    DEMO_ID,
    MAX_IMAGES,
    MAX_SIDE,
    MAX_STEPS,
    TINY_AUTOENCODER,
    TINY_AUTOENCODER_FOLDER,
    ImageGenerator,
    ImageSettings,
    build_tiny_pipeline,
    check_settings,
    generate_frames,
    hub_repos,
    load_image_generator,
    prompt_notes,
    reproduce_code,
    running_generations,
    text_to_image,
    tiny_autoencoder_for,
)
from demos.text_to_image.tab import EXAMPLES, text_to_image_tab
from hub.demo import Demo

DEMO = Demo(
    id=DEMO_ID,
    title="Text to image (diffusion)",
    default_model=DEFAULT_MODEL,
    load=load_image_generator,
    build_tiny=build_tiny_pipeline,
    tab=text_to_image_tab,
    hub_repos=hub_repos,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULTS",
    "DEMO",
    "DEMO_ID",
    "EXAMPLES",
    "MAX_IMAGES",
    "MAX_SIDE",
    "MAX_STEPS",
    "TINY_AUTOENCODER",
    "TINY_AUTOENCODER_FOLDER",
    "ImageGenerator",
    "ImageSettings",
    "build_tiny_pipeline",
    "check_settings",
    "generate_frames",
    "hub_repos",
    "load_image_generator",
    "prompt_notes",
    "reproduce_code",
    "running_generations",
    "text_to_image",
    "tiny_autoencoder_for",
    "text_to_image_tab",
]
