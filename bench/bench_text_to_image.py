"""Text to image: seconds per image through the hub (core function and HTTP API) against the bare diffusers
pipeline, on random-weight models of sd-turbo's architecture at full size: the Stable Diffusion 2.1 UNet
(865M parameters), the OpenCLIP ViT-H text encoder (23 layers, as SD 2.x uses it) and a full-size taesd.
Default settings: 512x512, 1 step, guidance 0. Run: python -m bench.bench_text_to_image [--sizes 512,256]"""

import argparse
import gc
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from bench.common import do_nothing_round_trip, markdown_table, served, within_target
from demos import text_to_image as t2i
from hub import tiny
from hub.app import build_app
from hub.models import ModelStore
from hub.settings import Settings

PROMPT = "A cinematic photo of a red fox in a snowy forest at sunrise"


def build_sd_turbo_sized(folder: Path) -> None:
    """sd-turbo's architecture with random weights; saved in bf16 to halve the disk traffic (loading casts)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=512,
        )
    )
    vae = AutoencoderKL(  # SD's own autoencoder, so the folder is a complete pipeline; the hub swaps in taesd
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    # A small trained vocabulary: the text encoder's work does not depend on it.
    pipe = tiny.sd_turbo_pipeline(vae, text_encoder, tiny.clip_tokenizer(), unet)
    pipe.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    AutoencoderTiny().to(torch.bfloat16).save_pretrained(folder / t2i.TINY_AUTOENCODER_FOLDER)  # taesd's own shape


def measure(dtype_name: str, folder: Path, size: int, repeat: int, round_trip_s: float) -> dict:
    settings = Settings(models={t2i.DEMO_ID: str(folder)}, demos=[t2i.DEMO_ID], dtype=dtype_name, offline=True)
    store = ModelStore(settings, [t2i.DEMO])
    generator = store.get(t2i.DEMO_ID)  # the hub's own loading code: AutoPipelineForText2Image + taesd
    pipe = generator.pipe
    image_settings = t2i.ImageSettings(width=size, height=size)

    def bare() -> None:
        with torch.inference_mode():
            pipe(PROMPT, num_inference_steps=1, guidance_scale=0.0, width=size, height=size,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip

    def bare_in_thread() -> None:
        # The hub runs each pipeline call in a fresh thread. On these shared machines a fresh thread ran the same
        # call up to 3x faster than the main thread (both with 2 OpenMP threads), so the fair baseline is both.
        thread = threading.Thread(target=bare)
        thread.start()
        thread.join()

    def core() -> None:
        t2i.text_to_image(generator, PROMPT, image_settings)

    with served(build_app(settings, store)) as client:

        def api() -> None:
            client.predict(PROMPT, "", 1, 0.0, size, size, 0, 1, True, api_name="/text_to_image")

        paths = [("bare", bare), ("bare thread", bare_in_thread), ("core", core), ("api", api)]
        runs = {name: [] for name, _ in paths}
        cpu = {name: [] for name, _ in paths}
        for _, fn in paths:  # warm-up: first calls allocate and pick kernels
            fn()
        for r in range(repeat):  # interleaved and rotated, so load from other processes hits every path alike
            for name, fn in paths[r % len(paths) :] + paths[: r % len(paths)]:
                t, c = time.perf_counter(), time.process_time()
                fn()
                runs[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)  # all threads of this process: server and client too
        print("wall", {name: [round(s, 2) for s in times] for name, times in runs.items()}, flush=True)
        print("cpu", {name: [round(s, 2) for s in times] for name, times in cpu.items()}, flush=True)
    median = {name: statistics.median(times) for name, times in runs.items()}
    fastest = {name: min(times) for name, times in runs.items()}
    bare_s = min(median["bare"], median["bare thread"])  # the faster baseline, so the ratio is not flattered
    api_s = median["api"]
    row = {
        "dtype": f"{dtype_name} ({str(store.dtype).removeprefix('torch.')})",
        "size": f"{size}x{size}",
        "bare, main thread s": f"{median['bare']:.2f}",
        "bare, fresh thread s": f"{median['bare thread']:.2f}",
        "core s": f"{median['core']:.2f}",
        "HTTP API s": f"{api_s:.2f}",
        "API / bare": f"{api_s / bare_s:.3f}",
        # Other processes share these cores: the fastest run of each path is the least disturbed one.
        "API / bare, fastest runs": f"{fastest['api'] / min(fastest['bare'], fastest['bare thread']):.3f}",
        "within target": "yes" if within_target(api_s, bare_s, round_trip_s) else "NO",
        # CPU seconds barely depend on what other processes do, so their ratio shows the hub's own overhead.
        "CPU s: bare / API": f"{statistics.median(cpu['bare thread']):.2f} / {statistics.median(cpu['api']):.2f}",
        "API / bare, CPU": f"{statistics.median(cpu['api']) / statistics.median(cpu['bare thread']):.3f}",
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512", help="comma-separated image sides [512]")
    parser.add_argument("--dtypes", default="float32,auto", help="comma-separated --dtype values [float32,auto]")
    parser.add_argument("--repeat", type=int, default=6, help="timed runs per path, after one warm-up [6]")
    args = parser.parse_args()

    round_trip_s = do_nothing_round_trip()
    folder = Path(tempfile.mkdtemp(prefix="bench-t2i-")) / "sd-turbo-sized"
    try:
        start = time.perf_counter()
        build_sd_turbo_sized(folder)
        print(f"built random sd-turbo-sized pipeline in {time.perf_counter() - start:.0f} s", flush=True)
        rows = []
        for dtype_name in args.dtypes.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                rows.append(measure(dtype_name, folder, size, args.repeat, round_trip_s))
                print(rows[-1], flush=True)
                gc.collect()  # free this dtype's models before loading the next
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"\nGradio do-nothing round trip: {round_trip_s * 1000:.0f} ms; torch threads: {torch.get_num_threads()}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
