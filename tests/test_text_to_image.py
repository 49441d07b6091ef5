"""Text to image: the core against the bare diffusers pipeline on the same tiny weights and seed, the step
callback and Stop, then /text_to_image over HTTP and the tab in a browser."""

import dataclasses
import math
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny, AutoPipelineForText2Image
from gradio_client.exceptions import AppError
from PIL import Image

from demos.text_to_image import (
    DEFAULT_MODEL,
    MAX_IMAGES,
    MAX_SIDE,
    MAX_STEPS,
    TINY_AUTOENCODER,
    ImageSettings,
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
from hub.app import build_app
from hub.errors import HubError

PROMPT = "A watercolor painting of a lighthouse"
SMALL = dict(width=64, height=64)  # the tiny model draws any size; small ones keep the tests fast


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir("text-to-image")


@pytest.fixture(scope="module")
def generator(model_dir):
    return load_image_generator(str(model_dir))


@pytest.fixture(scope="module")
def bare_pipe(model_dir):
    """The reference recipe: diffusers' own pipeline with the tiny autoencoder swapped in."""
    vae = AutoencoderTiny.from_pretrained(model_dir / "taesd")
    pipe = AutoPipelineForText2Image.from_pretrained(model_dir, vae=vae, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_same_image(ours: Image.Image, reference: Image.Image, tolerance: int = 0) -> None:
    assert ours.size == reference.size
    difference = np.abs(pixels(ours) - pixels(reference)).max()
    assert difference <= tolerance, f"images differ by up to {difference} levels"


class CountingUNet:
    """Counts UNet calls (one per denoising step without guidance) and can slow them down or set a stop flag."""

    def __init__(self, unet, delay_s: float = 0.0, stop_after: int | None = None, stop: threading.Event | None = None):
        self.calls, self.delay_s, self.stop_after, self.stop = 0, delay_s, stop_after, stop
        self.handle = unet.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        if self.stop is not None and self.calls == self.stop_after:
            self.stop.set()  # pressed while this step runs: it finishes, and no other starts
        time.sleep(self.delay_s)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --- the core against the bare pipeline ------------------------------------------------------------------


def test_the_tiny_preset_loads_as_the_default_does(generator):
    assert type(generator.pipe).__name__ == "StableDiffusionPipeline"
    assert isinstance(generator.pipe.vae, AutoencoderTiny)  # swapped in for fast decoding
    assert generator.preview_decoder is generator.pipe.vae
    assert generator.size_multiple == 8


def test_image_equals_the_bare_pipeline_with_the_same_seed(generator, bare_pipe):
    settings = ImageSettings(steps=2, seed=7, **SMALL)
    ours = text_to_image(generator, PROMPT, settings)
    reference = bare_pipe(
        PROMPT, num_inference_steps=2, guidance_scale=0.0, generator=torch.Generator().manual_seed(7), **SMALL
    ).images
    assert len(ours) == 1
    assert pixels(ours[0]).std() > 10, "a flat picture would make this comparison meaningless"
    assert_same_image(ours[0], reference[0])


def test_same_seed_same_image_other_seed_other_image(generator):
    first = text_to_image(generator, PROMPT, ImageSettings(seed=1, **SMALL))[0]
    again = text_to_image(generator, PROMPT, ImageSettings(seed=1, **SMALL))[0]
    other = text_to_image(generator, PROMPT, ImageSettings(seed=2, **SMALL))[0]
    assert_same_image(first, again)
    assert np.abs(pixels(first) - pixels(other)).max() > 50


def test_the_code_accordion_reproduces_the_image(generator, tmp_path, monkeypatch):
    """Run the shown code itself: guidance with a negative prompt, several images, odd size."""
    settings, _ = check_settings("blurry", 3, 4.5, 96, 72, seed=11, num_images=2)
    ours = text_to_image(generator, PROMPT, settings)
    code = reproduce_code(generator, PROMPT, settings, torch.float32)
    assert "negative_prompt='blurry'" in code and "AutoencoderTiny.from_pretrained" in code
    monkeypatch.chdir(tmp_path)
    exec(code, {})
    assert_same_image(ours[0], Image.open(tmp_path / "image.png"))


def test_image_i_of_a_batch_is_the_single_image_with_seed_plus_i(generator):
    batch = text_to_image(generator, PROMPT, ImageSettings(seed=20, num_images=3, **SMALL))
    assert len(batch) == 3
    for i, image in enumerate(batch):
        single = text_to_image(generator, PROMPT, ImageSettings(seed=20 + i, **SMALL))[0]
        assert_same_image(image, single, tolerance=2)  # a batch of 3 may round differently from a batch of 1


def test_a_model_without_tiny_autoencoder_uses_its_own(model_dir, tmp_path):
    """A --model folder without taesd/: the pipeline's own autoencoder decodes, and there are no previews."""
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain, ignore=shutil.ignore_patterns("taesd"))
    generator = load_image_generator(str(plain))
    assert generator.preview_decoder is None and generator.tiny_autoencoder_source is None
    assert type(generator.pipe.vae).__name__ == "AutoencoderKL"
    frames = list(generate_frames(generator, PROMPT, ImageSettings(steps=2, **SMALL)))
    assert [f.images for f in frames[:-1]] == [[], []]
    reference_pipe = AutoPipelineForText2Image.from_pretrained(plain, use_safetensors=True)
    reference = reference_pipe(
        PROMPT, num_inference_steps=2, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **SMALL
    ).images[0]
    assert_same_image(frames[-1].images[0], reference)
    assert "AutoencoderTiny.from_pretrained" not in reproduce_code(generator, PROMPT, ImageSettings(), torch.float32)


def test_default_model_brings_its_tiny_autoencoder(model_dir, tmp_path):
    assert tiny_autoencoder_for(DEFAULT_MODEL) == TINY_AUTOENCODER
    assert hub_repos(DEFAULT_MODEL) == [DEFAULT_MODEL, TINY_AUTOENCODER]
    assert tiny_autoencoder_for(str(model_dir)) == str(model_dir / "taesd")
    assert hub_repos(str(model_dir)) == [str(model_dir)]
    assert tiny_autoencoder_for(str(tmp_path)) is None


# --- the step callback and Stop -----------------------------------------------------------------------------


def test_every_step_reports_and_previews_match_decoded_latents(generator, bare_pipe):
    settings = ImageSettings(steps=4, seed=3, num_images=2, **SMALL)
    frames = list(generate_frames(generator, PROMPT, settings, previews=True))
    assert [(f.step, f.steps, f.final) for f in frames] == [(1, 4, False), (2, 4, False), (3, 4, False),
                                                            (4, 4, False), (4, 4, True)]  # fmt: skip
    assert [len(f.images) for f in frames] == [2, 2, 2, 0, 2]  # the last step's picture is the final image

    # Reference: the latents diffusers hands its own callback, decoded by the tiny autoencoder.
    latents_seen = []

    def keep_latents(pipe, index, timestep, tensors):
        latents_seen.append(tensors["latents"].clone())
        return tensors

    bare_pipe(PROMPT, num_inference_steps=4, guidance_scale=0.0, num_images_per_prompt=2, **SMALL,
              generator=settings.generators(), callback_on_step_end=keep_latents)  # fmt: skip
    vae = bare_pipe.vae
    with torch.no_grad():
        decoded = vae.decode(latents_seen[1] / vae.config.scaling_factor).sample
    reference = bare_pipe.image_processor.postprocess(decoded, output_type="pil")
    for ours, expected in zip(frames[1].images, reference):
        assert_same_image(ours, expected)
    assert pixels(frames[0].images[0]).tolist() != pixels(frames[2].images[0]).tolist()  # the picture changes


def test_previews_come_at_most_as_often_as_asked(generator):
    """A fast model's steps come many times a second; the tab decodes and shows a preview at most every
    PREVIEW_EVERY_S (each costs a decode and an image sent), every step still reports."""
    frames = list(generate_frames(generator, PROMPT, ImageSettings(steps=4, **SMALL), preview_every_s=3600))
    assert [(f.step, len(f.images)) for f in frames] == [(1, 1), (2, 0), (3, 0), (4, 0), (4, 1)]


def test_no_previews_when_not_asked(generator):
    frames = list(generate_frames(generator, PROMPT, ImageSettings(steps=3, **SMALL), previews=False))
    assert [len(f.images) for f in frames] == [0, 0, 0, 1]


def test_stop_ends_the_generation_within_one_step(generator):
    stop = threading.Event()
    with CountingUNet(generator.pipe.unet, stop_after=2, stop=stop) as unet:
        frames = list(generate_frames(generator, PROMPT, ImageSettings(steps=10, **SMALL), stop=stop))
    assert unet.calls == 2, "the step running when Stop was pressed finishes, and no further step starts"
    assert [f.step for f in frames] == [1]  # step 2's callback saw the flag and ended the call
    assert not any(f.final for f in frames)
    assert not running_generations


def test_closing_the_stream_stops_the_pipeline_thread(generator):
    with CountingUNet(generator.pipe.unet, delay_s=0.05) as unet:
        stream = generate_frames(generator, PROMPT, ImageSettings(steps=40, **SMALL))
        next(stream)
        stream.close()  # what Gradio does when the visitor leaves or the API caller cancels
        deadline = time.monotonic() + 2  # closing does not wait: the thread ends after its step
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not running_generations
        assert unet.calls <= 3
    with pytest.raises(StopIteration):
        next(stream)


def resident_mb() -> float:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024


def test_memory_comes_back_down_after_a_large_generation(generator):
    """glibc keeps what torch's worker threads freed in their arenas; a finished job hands it back (hub.jobs)."""
    text_to_image(generator, PROMPT, ImageSettings(**SMALL))
    before = resident_mb()
    text_to_image(generator, PROMPT, ImageSettings(steps=1, width=1024, height=1024, num_images=2))
    time.sleep(0.2)
    assert resident_mb() - before < 60, f"{resident_mb() - before:.0f} MB stayed after the run"


def test_two_generations_at_once_give_the_same_images_as_one_by_one(generator):
    """With diffusion_concurrency > 1 calls share the models; each must keep its own scheduler state."""
    settings = [ImageSettings(steps=3, seed=seed, **SMALL) for seed in (30, 31)]
    alone = [text_to_image(generator, PROMPT, s)[0] for s in settings]
    together: dict[int, Image.Image] = {}
    threads = [
        threading.Thread(target=lambda i=i: together.update({i: text_to_image(generator, PROMPT, settings[i])[0]}))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(2):
        assert_same_image(together[i], alone[i])


def test_the_concurrency_setting_limits_the_event(tiny_settings):
    for limit in (1, 3):
        settings = dataclasses.replace(tiny_settings, demos=["text-to-image"], diffusion_concurrency=limit)
        app = build_app(settings)
        (event,) = [fn for fn in app.fns.values() if fn.api_name == "text_to_image"]
        assert event.concurrency_limit == limit


# --- checks --------------------------------------------------------------------------------------------------


def test_sizes_snap_to_multiples_of_8():
    settings, notes = check_settings(width=500, height=333.3)
    assert (settings.width, settings.height) == (504, 336)
    assert "snapped to 504x336" in notes[0]
    settings, notes = check_settings(width=512, height=512)
    assert (settings.width, settings.height, notes) == (512, 512, [])
    assert check_settings(width=MAX_SIDE, height=64, size_multiple=16)[0].width == MAX_SIDE


def test_negative_prompt_without_guidance_is_pointed_out():
    settings, notes = check_settings("blurry", guidance_scale=0.0)
    assert "negative_prompt" not in settings.pipeline_kwargs()
    assert any("guidance scale above 1" in note for note in notes)
    settings, notes = check_settings("blurry", guidance_scale=5.0)
    assert settings.pipeline_kwargs()["negative_prompt"] == "blurry" and notes == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "Steps"),
        (dict(steps=MAX_STEPS + 1), "Steps"),
        (dict(steps=2.5), "Steps"),
        (dict(steps=math.nan), "Steps"),
        (dict(guidance_scale=-1), "Guidance"),
        (dict(guidance_scale=math.inf), "Guidance"),
        (dict(width=32), "Width"),
        (dict(height=MAX_SIDE + 8), "Height"),
        (dict(width=math.nan), "Width"),
        (dict(width="512"), "Width"),
        (dict(seed=-1), "Seed"),
        (dict(num_images=MAX_IMAGES + 1), "Number of images"),
        (dict(num_images=True), "Number of images"),
        (dict(negative_prompt="x" * 100_000), "Negative prompt is too long"),
    ],
)
def test_bad_settings_are_refused_with_a_message(kwargs, message):
    with pytest.raises(HubError, match=message):
        check_settings(**kwargs)


def test_a_request_costing_more_than_the_budget_is_refused_naming_the_limit():
    settings, _ = check_settings(steps=8)  # 8 steps of one 512x512 image: exactly the default budget
    assert settings.cost == 8
    assert check_settings(steps=2, width=1024, height=1024, budget=8)[0].cost == 8
    with pytest.raises(HubError, match="costs as much as 800 steps.*allows 8 per request"):
        check_settings(steps=MAX_STEPS, width=1024, height=1024, num_images=MAX_IMAGES)
    with pytest.raises(HubError, match="x 2 for guidance"):
        check_settings(steps=5, guidance_scale=7.0)  # guidance runs the model twice a step
    assert check_settings(steps=MAX_STEPS, num_images=MAX_IMAGES, budget=1_000)[0].cost == 200  # --image-budget


def test_api_refuses_a_request_over_the_budget_before_drawing(client, store):
    with CountingUNet(store.get("text-to-image").pipe.unet) as unet:
        with pytest.raises(AppError, match="allows 8 per request"):
            client.predict(PROMPT, "", MAX_STEPS, 0.0, 1024, 1024, 0, MAX_IMAGES, False, api_name="/text_to_image")
        assert unet.calls == 0


@pytest.mark.parametrize("prompt, message", [("", "empty"), ("  \n ", "empty"), ("x" * 1_000_000, "too long")])
def test_bad_prompts_are_refused(generator, prompt, message):
    with pytest.raises(HubError, match=message):
        text_to_image(generator, prompt, ImageSettings(**SMALL))
    assert not running_generations


def test_a_prompt_longer_than_the_text_encoder_reads_is_pointed_out(generator):
    assert prompt_notes(generator, PROMPT) == []
    assert "reads the first 77" in prompt_notes(generator, "a red fox " * 40)[0]
    assert text_to_image(generator, "\u0007 a cat \U0001f600 " * 40, ImageSettings(**SMALL))  # still draws


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_returns_the_same_image_as_the_core(client, store):
    result = client.predict(PROMPT, "", 2, 0.0, 64, 64, 5, api_name="/text_to_image")
    (expected,) = text_to_image(store.get("text-to-image"), PROMPT, ImageSettings(steps=2, seed=5, **SMALL))
    assert_same_image(Image.open(result), expected)  # PNG, so no lossy step in between


def test_api_with_several_images_returns_the_first(client, store):
    result = client.predict(PROMPT, "", 1, 0.0, 64, 64, 5, 3, api_name="/text_to_image")
    expected = text_to_image(store.get("text-to-image"), PROMPT, ImageSettings(seed=5, num_images=3, **SMALL))
    assert_same_image(Image.open(result), expected[0])


def test_api_defaults_draw_one_512px_image(client):
    assert Image.open(client.predict("a cat", api_name="/text_to_image")).size == (512, 512)


def test_api_streams_an_update_per_step_a_jpeg_preview_and_the_png_image(client):
    job = client.submit(PROMPT, "", 3, 0.0, 64, 64, 0, 1, True, api_name="/text_to_image")
    outputs = list(job)
    # An empty update first (from then on a cancel can close the handler), steps 1 and 2, the image.
    assert len(outputs) == 4 and outputs[0] == {"__type__": "update"}
    assert Image.open(outputs[1]).format == "JPEG"  # step 1's preview: 1 ms to encode where a PNG takes 70
    assert outputs[-1] == job.result() and Image.open(outputs[-1]).format == "PNG"


@pytest.mark.parametrize("previews", [True, False])
def test_api_cancel_stops_the_pipeline_thread_with_and_without_previews(client, store, previews):
    """Without previews the handler still yields once a step (an empty update): Gradio can close it only there."""
    with CountingUNet(store.get("text-to-image").pipe.unet, delay_s=0.2) as unet:
        job = client.submit(PROMPT, "", MAX_STEPS, 0.0, 64, 64, 0, 1, previews, api_name="/text_to_image")
        deadline = time.monotonic() + 30
        while unet.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        job.cancel()
        steps_at_cancel = unet.calls
        deadline = time.monotonic() + 5
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not running_generations, "the pipeline thread kept running after cancel"
        # The step running at the cancel ends; one more may have begun before Gradio's next chance to close the
        # handler (a loaded machine delays that chance); none after it.
        assert unet.calls <= steps_at_cancel + 3, "the job ran on for more than a step after the cancel"


def test_api_cancel_stops_the_pipeline_thread(client, store):
    with CountingUNet(store.get("text-to-image").pipe.unet, delay_s=0.1) as unet:
        job = client.submit(PROMPT, "", MAX_STEPS, 0.0, 64, 64, 0, 1, True, api_name="/text_to_image")
        deadline = time.monotonic() + 30
        while not job.outputs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.outputs(), "no preview arrived"
        job.cancel()
        steps_at_cancel = unet.calls
        deadline = time.monotonic() + 5
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_generations, "the pipeline thread kept running after cancel"
        # Gradio closes the stream once its current read returns, i.e. after the next step's frame.
        assert unet.calls <= steps_at_cancel + 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("",), "empty"),
        (("x" * 1_000_000,), "too long"),
        ((PROMPT, "", 0), "Steps|minimum"),
        ((PROMPT, "", 10_000), "Steps|maximum"),
        ((PROMPT, "", 1, 0.0, 4096, 512), "Width|maximum"),
        ((PROMPT, "", 1, 0.0, 512, 8), "Height|minimum"),
        ((PROMPT, "", 1, -3.0), "Guidance|minimum"),
        ((PROMPT, "", 1, 0.0, 64, 64, -1), "Seed|minimum"),
        ((PROMPT, "", 1, 0.0, 64, 64, 0, 50), "Number of images|maximum"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/text_to_image")
    assert client.predict("a cat", "", 1, 0.0, 64, 64, api_name="/text_to_image")
