"""Vision benchmark: full-size random-weight ViT-B/16 (timm) and CLIP ViT-B/32 (open_clip), each request through the
hub's core and its HTTP API against the bare library recipe on the same model and dtype, in one run.
CLIP also with a repeated label set (text embeddings cached) against a new label set each request.
/vit_attention (where ViT looks) against timm's forward with attentions (fused attention off, AttentionExtract).

The hub serves from a process of its own (bench.serve_hub), the do-nothing round trips from another
(bench.echo_server), both called as a browser's page calls them (bench.common.BrowserClient: upload, then the call);
the bare recipes and the hub's core functions run in this process's main thread, its only torch thread, as a plain
script runs them. Hub and bare calls alternate.

    python -m bench.bench_vision                    # prints markdown tables for the README
    python -m bench.bench_vision --preset tiny      # the tiny test models: a quick check of the overheads
    python -m bench.bench_vision --model DIR        # a ViT saved by timm's save_for_hf instead of ViT-B/16
"""

import argparse
import copy
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_model_data_config
from timm.utils import AttentionExtract

from bench.common import BrowserClient, alternate, browser_round_trip, cpu_name, markdown_table, server_process
from demos.clip import tab as clip_zero_shot
from demos.clip.zero_shot import DEFAULT_TEMPLATE, load_clip, zero_shot
from demos.vision.image_classification import build_tiny_vit, classify_image, load_classifier
from demos.vision.vit_attention import vit_attention
from hub.images import example_photos

LABELS = "a cat, a dog, a rocket"  # three labels, as in the project's reference measurements
REPEAT = 9


def save_random_vit(folder: Path) -> None:
    """The default architecture at full size with random weights, saved as timm saves for the Hub."""
    timm.models.save_for_hf(
        timm.create_model("vit_base_patch16_224", pretrained=False), folder, safe_serialization=True
    )


def save_random_clip(folder: Path) -> None:
    """ViT-B-32 at full size with random weights, saved as open_clip loads a local folder."""
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")


def bare_vit(model: torch.nn.Module, path: Path) -> None:
    """timm's recipe from the file: decode, the model's own transform, one forward pass, softmax."""
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        pixels = transform(Image.open(path).convert("RGB")).unsqueeze(0).to(dtype)
        model(pixels)[0].float().softmax(-1).topk(5)


def attention_extractor(model: torch.nn.Module) -> AttentionExtract:
    """timm's own way to read attention maps, on a view sharing the loaded weights with fused attention off (the
    fused kernel never forms the softmax); the hub's view is left alone, so neither carries the other's hooks."""
    view = copy.deepcopy(model, memo={id(t): t for t in (*model.parameters(), *model.buffers())})
    for block in view.blocks:
        block.attn.fused_attn = False
    return AttentionExtract(view, method="hook")


def bare_vit_attention(extract: AttentionExtract, path: Path) -> None:
    """The bare forward with attentions from the file: decode, the model's transform, one forward, every map."""
    model = extract.model
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        pixels = transform(Image.open(path).convert("RGB")).unsqueeze(0).to(dtype)
        [a.float() for a in extract(pixels).values()]


def bare_clip(model: torch.nn.Module, preprocess, tokenizer, path: Path, labels: list[str]) -> None:
    """open_clip's recipe from the file: encode the image and the prompts, normalise, scale, softmax."""
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        image = model.encode_image(preprocess(Image.open(path).convert("RGB")).unsqueeze(0).to(dtype), normalize=True)
        text = model.encode_text(tokenizer([f"a photo of a {label}." for label in labels]), normalize=True)
        (model.logit_scale.exp() * image.float() @ text.float().T).softmax(-1)


def within_target(http_s: float, bare_s: float, round_trip_s: float) -> bool:
    """DESIGN.md's target: a request costs at most the bare call + Gradio's do-nothing round trip + 10 ms."""
    return http_s <= bare_s + round_trip_s + 0.010


def row(name: str, dtype: torch.dtype, bare: float, core: float, http: float, round_trip: float, **extra) -> dict:
    return {
        "model": name,
        "dtype": str(dtype).removeprefix("torch."),
        "bare ms": f"{bare * 1e3:.0f}",
        "core ms": f"{core * 1e3:.0f}",
        "HTTP ms": f"{http * 1e3:.0f}",
        "do-nothing image round trip ms": f"{round_trip * 1e3:.0f}",
        "(HTTP - round trip) / bare": f"{(http - round_trip) / bare:.2f}",
        "hub's own ms (HTTP - bare - round trip)": f"{(http - bare - round_trip) * 1e3:.0f}",
        **extra,
        "target ms": f"{(bare + round_trip + 0.010) * 1e3:.0f}",
        "met": "yes" if within_target(http, bare, round_trip) else "NO",
    }


def bench_dtype(
    dtype_name: str, vit_dir: Path, clip_dir: Path, photo: Path, cache: Path, vit_name: str, clip_name: str, repeat: int
):
    settings = {
        "demos": ["image-classification", "zero-shot"],
        "models": {"image-classification": str(vit_dir), "zero-shot": str(clip_dir)},
        "dtype": dtype_name,
        "cache_dir": str(cache),
    }
    with server_process("bench.serve_hub", json.dumps(settings)) as hub, server_process("bench.echo_server") as echo:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[hub["dtype"]]
        # The bare side and the hub's core: the same weights in the same dtype, in this process's main thread.
        classifier, clip = load_classifier(str(vit_dir), dtype), load_clip(str(clip_dir), dtype)
        # Requests as a browser's page makes them: the photo uploaded, then the call (bench.common.BrowserClient).
        client, echo_client = BrowserClient(hub["url"]), BrowserClient(echo["url"])

        def do_nothing() -> None:  # Gradio's round trip for an image request: the upload too
            echo_client.call("image_echo", echo_client.upload(photo))

        vit = alternate(
            {
                "round trip": do_nothing,
                "bare": lambda: bare_vit(classifier.model, photo),
                "core": lambda: classify_image(classifier, str(photo), 5),
                "http": lambda: client.call("classify_image", client.upload(photo), 5),
            },
            repeat,
        )
        vit_row = row(vit_name, dtype, vit["bare"], vit["core"], vit["http"], vit["round trip"])

        # Where ViT looks: hub and bare calls alternate, as above (rollout, the default view).
        extract = attention_extractor(classifier.model)
        looks = alternate(
            {
                "round trip": do_nothing,
                "bare": lambda: bare_vit_attention(extract, photo),
                "core": lambda: vit_attention(classifier, str(photo)),
                "http": lambda: client.call("vit_attention", client.upload(photo), 0, 0),
            },
            repeat,
        )
        attention_row = row(
            f"{vit_name} /vit_attention (bare: forward with attentions)",
            dtype,
            looks["bare"],
            looks["core"],
            looks["http"],
            looks["round trip"],
        )

        labels = [label.strip() for label in LABELS.split(",")]
        counter = itertools.count()

        def new_labels() -> str:  # a label set never seen before: the text encoder must run
            n = next(counter)
            return f"a cat {n}, a dog {n}, a rocket {n}"

        def http(labels: str) -> None:
            client.call("zero_shot", client.upload(photo), labels, DEFAULT_TEMPLATE, False)

        timings = alternate(
            {
                "round trip": do_nothing,
                "bare": lambda: bare_clip(clip.model, clip.preprocess, clip.tokenizer, photo, labels),
                "core new": lambda: zero_shot(clip, [str(photo)], new_labels()),
                "core repeated": lambda: zero_shot(clip, [str(photo)], LABELS),
                "http new": lambda: http(new_labels()),
                "http repeated": lambda: http(LABELS),
            },
            repeat,
        )
        clip_rows = [
            row(
                f"{clip_name}, {kind} label set",
                dtype,
                timings["bare"],
                timings[f"core {kind}"],
                timings[f"http {kind}"],
                timings["round trip"],
            )
            for kind in ("new", "repeated")
        ]
        client.close()
        echo_client.close()
    return [vit_row, attention_row], clip_rows


def models(preset: str, vit_model: str | None, scratch: Path) -> tuple[Path, Path, str, str]:
    """The ViT and CLIP folders to measure, and their names for the tables."""
    vit_dir, clip_dir = scratch / "vit", scratch / "clip"
    vit_dir.mkdir()
    clip_dir.mkdir()
    if preset == "tiny":
        build_tiny_vit(vit_dir)
        clip_zero_shot.DEMO.build_tiny(clip_dir)
        vit_name, clip_name = "tiny ViT", "tiny CLIP"
    else:
        save_random_clip(clip_dir)
        vit_name, clip_name = "ViT-B/16", "CLIP ViT-B/32"
        try:
            save_random_vit(vit_dir)
        except Exception as error:  # e.g. no memory for it: measure the tiny one rather than nothing
            print(f"ViT-B/16 could not be built ({error}); measuring the tiny ViT instead.\n")
            build_tiny_vit(vit_dir)
            vit_name = "tiny ViT"
    if vit_model:
        vit_dir, vit_name = Path(vit_model), Path(vit_model).name
    return vit_dir, clip_dir, vit_name, clip_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["full", "tiny"], default="full", help="full-size random weights or tiny")
    parser.add_argument("--model", help="a local ViT folder (timm save_for_hf) to measure instead of the preset's")
    parser.add_argument("--dtypes", default="float32,auto", help="comma-separated dtypes to measure [%(default)s]")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="timed rounds per call [%(default)s]")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench-vision-") as scratch:
        scratch = Path(scratch)
        vit_dir, clip_dir, vit_name, clip_name = models(args.preset, args.model, scratch)
        photo = scratch / "coffee.jpg"
        Image.fromarray(np.asarray(example_photos()[1])).save(photo, quality=95)  # 600x400, like a web photo

        text_round_trip = browser_round_trip()
        print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"Gradio do-nothing round trip, text, as a browser calls it (a server process of its own): "
              f"{text_round_trip * 1e3:.0f} ms\n")  # fmt: skip
        vit_rows, clip_rows = [], []
        for dtype_name in args.dtypes.split(","):
            more_vit, more_clip = bench_dtype(
                dtype_name, vit_dir, clip_dir, photo, scratch / "cache", vit_name, clip_name, args.repeat
            )
            vit_rows += more_vit
            clip_rows += more_clip
        print(markdown_table(vit_rows))
        print()
        print(markdown_table(clip_rows))


if __name__ == "__main__":
    main()
