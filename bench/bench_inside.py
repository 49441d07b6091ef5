"""The views inside the models: /attention and /layer_predictions (core and HTTP API) against the bare library
forward pass on the same weights, and the 144-head overview, in one run.

Random-weight GPT-2 124M and BERT base (the default architectures at full size) do the same arithmetic as the real
models without a download. Run: python -m bench.bench_inside [--repeat 10]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from bench.bench_language import alternate, build_full_size_models
from bench.common import cpu_name, do_nothing_round_trip, free_port, markdown_table, within_target
from demos import find_demos
from demos.attention.maps import attention, attention_maps, overview_figure
from demos.inside.layers import layer_predictions
from hub.app import build_app, launch
from hub.device import resolve_dtype
from hub.inside import load_transformer
from hub.models import ModelStore
from hub.settings import Settings

# 20 words: about 20 tokens for both models, the size the overview target names.
SENTENCE = "The animal did not cross the busy street because it was too tired after the long walk home today."
MASKED = "The animal did not cross the busy [MASK] because it was too tired after the long walk home today."


def bare_lens(model, ids: torch.Tensor) -> None:
    """What the logit lens asks of the library: hidden states, then the final norm and the head on each layer."""
    with torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True)
        if hasattr(model, "transformer"):
            for hidden in out.hidden_states[:-1]:
                model.lm_head(model.transformer.ln_f(hidden)).softmax(-1).max(-1)
            out.logits.softmax(-1).max(-1)
        else:
            for hidden in out.hidden_states:
                model.cls(hidden).softmax(-1).max(-1)


def bench_dtype(dtype: str, models: dict[str, str], repeat: int, round_trip: float) -> list[dict]:
    settings = Settings(dtype=dtype, models=models, demos=["attention", "layers"], port=free_port())
    store = ModelStore(settings, find_demos(settings.demos))
    app = build_app(settings, store)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    from gradio_client import Client

    client = Client(url, verbose=False)
    name = str(store.dtype).replace("torch.", "")
    rows = []
    try:
        for which, model_class, text in (
            ("decoder", AutoModelForCausalLM, SENTENCE),
            ("encoder", AutoModelForMaskedLM, MASKED),
        ):
            t = load_transformer(store, which)
            source = models["text-generation" if which == "decoder" else "fill-mask"]
            # The bare call: the library's own eager model, loaded on its own, as a user of transformers would.
            bare = model_class.from_pretrained(source, attn_implementation="eager", dtype=store.dtype).eval()
            ids = t.tokenizer(text, return_tensors="pt").input_ids

            def bare_attention(bare=bare, ids=ids):
                with torch.inference_mode():
                    bare(input_ids=ids, output_attentions=True)

            times = alternate(
                {
                    "bare attention": bare_attention,
                    "core attention": lambda t=t, text=text: attention(t, text, 1, 1),
                    "api attention": lambda which=which, text=text: client.predict(
                        text, which, 1, 1, api_name="/attention"
                    ),
                    "bare lens": lambda bare=bare, ids=ids: bare_lens(bare, ids),
                    "core lens": lambda t=t, text=text: layer_predictions(t, text),
                    "api lens": lambda which=which, text=text: client.predict(
                        text, which, api_name="/layer_predictions"
                    ),
                },
                repeat,
            )
            maps = attention_maps(t, text)
            # The overview as a visitor gets it for a 20-token sentence: the forward pass and the drawing.
            twenty = t.tokenizer.convert_tokens_to_string(t.tokenizer.tokenize(text)[: 20 - (t.kind == "encoder") * 2])
            start = time.perf_counter()
            for _ in range(repeat):
                overview = attention_maps(t, twenty)
                overview_figure(overview, (1, 1))
            overview_ms = (time.perf_counter() - start) / repeat * 1000
            model_name = "GPT-2 124M" if which == "decoder" else "BERT base"
            for endpoint, key in (("/attention", "attention"), ("/layer_predictions", "lens")):
                for path in ("core", "api"):
                    hub_s, bare_s = times[f"{path} {key}"], times[f"bare {key}"]
                    rows.append(
                        {
                            "dtype": name,
                            "model": f"{model_name}, {len(maps.tokens)} tokens",
                            "endpoint": endpoint,
                            "path": "hub core" if path == "core" else "HTTP API",
                            "bare ms": f"{bare_s * 1000:.0f}",
                            "hub ms": f"{hub_s * 1000:.0f}",
                            "hub - bare - round trip": f"{(hub_s - bare_s - (round_trip if path == 'api' else 0)) * 1000:+.0f} ms",
                            "target met": "yes" if within_target(hub_s, bare_s, round_trip) else "NO",
                        }
                    )
            rows.append(
                {
                    "dtype": name,
                    "model": f"{model_name}, {len(overview.tokens)} tokens",
                    "endpoint": f"overview: forward + {maps.weights.shape[0] * maps.weights.shape[1]} heads drawn",
                    "path": "hub core",
                    "bare ms": "",
                    "hub ms": f"{overview_ms:.0f}",
                    "hub - bare - round trip": "",
                    "target met": "yes" if overview_ms < 1000 else "NO",
                }
            )
    finally:
        app.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    round_trip = do_nothing_round_trip()
    with tempfile.TemporaryDirectory() as folder:
        models = build_full_size_models(Path(folder))
        rows = []
        for dtype in ("float32", "auto"):
            if dtype == "auto" and resolve_dtype("auto", "cpu") == torch.float32:
                print("auto picks float32 on this CPU: one run")
                continue
            rows += bench_dtype(dtype, models, args.repeat, round_trip)
    print(f"\nCPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"Gradio do-nothing round trip (gradio_client, loopback): {round_trip * 1000:.0f} ms")
    print("Target: hub <= 1.1 x bare + round trip + 20 ms (the issue's); the overview under 1 s.\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
