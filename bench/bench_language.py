"""GPT-2 streaming and BERT fill-mask: the hub (core and HTTP API) against the bare library call, in one run.

Random-weight models of the default architectures at full size (GPT-2 124M, BERT base) do the same arithmetic as
the real ones without a download. Run: python -m bench.bench_language [--tokens 64] [--repeat 5] (about 2-4 minutes
on 2 cores: `auto` is measured only where it picks another dtype than float32).

The streamed HTTP request is read as a browser or curl reads it: Gradio's documented `/gradio_api/call/generate`
route, its server-sent events read as they arrive. Not gradio_client's `Job` iterator: it looks for new output every
millisecond, which in this one process would take the GIL from the generation ~1000 times a second and charge the
client's cost to the hub. Bare `generate` runs in a thread of its own, as the hub's does (on a loaded 2-core machine
the main thread's OpenMP team ran it up to 3x slower than a fresh thread's, which would flatter the hub).
"""

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from bench.common import cpu_name, do_nothing_round_trip, free_port, markdown_table, within_target
from demos import find_demos
from demos.language.fill_mask import fill_mask
from demos.language.text_generation import GenerationSettings, generate_stream
from hub import tiny
from hub.app import build_app, launch
from hub.device import pick_device, resolve_dtype
from hub.models import ModelStore
from hub.settings import Settings

PROMPT = "The history of the transformer begins with a paper about attention, and since then"
MASKED = "The history of the [MASK] begins with a paper about attention, and since then it has changed."


def build_full_size_models(folder: Path) -> dict[str, str]:
    """GPT-2 124M and BERT base with random weights; the tokenizers are the small trained ones (ids they lack
    decode to nothing, which does not change the arithmetic)."""
    torch.manual_seed(0)
    gpt2, bert = folder / "gpt2", folder / "bert"
    GPT2LMHeadModel(GPT2Config()).save_pretrained(gpt2)
    tiny.gpt2_tokenizer(max_length=1024).save_pretrained(gpt2)
    BertForMaskedLM(BertConfig()).save_pretrained(bert)
    tiny.bert_tokenizer(max_length=512).save_pretrained(bert)
    return {"text-generation": str(gpt2), "fill-mask": str(bert)}


def alternate(calls: dict[str, callable], repeat: int) -> dict[str, float]:
    """Median seconds of each call, run in turn so that machine noise hits them alike."""
    for call in calls.values():
        call()  # warm-up
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_dtype(dtype: str, models: dict[str, str], tokens: int, repeat: int, round_trip: float) -> list[dict]:
    settings = Settings(dtype=dtype, models=models, demos=["text-generation", "fill-mask"], port=free_port())
    store = ModelStore(settings, find_demos(settings.demos))
    generator, fill = store.get("text-generation"), store.get("fill-mask")
    generator.model.generation_config.min_new_tokens = tokens  # random weights may pick EOS: always make `tokens`
    app = build_app(settings, store)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    from gradio_client import Client

    client = Client(url, verbose=False)
    http = httpx.Client(timeout=600)
    name = str(store.dtype).replace("torch.", "")
    try:
        input_ids = generator.tokenizer(PROMPT, return_tensors="pt").input_ids

        def bare_generate():
            out = []

            def generate():
                with torch.inference_mode():
                    out.append(generator.model.generate(
                        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=tokens, do_sample=False,
                        pad_token_id=generator.tokenizer.eos_token_id,
                    ))  # fmt: skip

            thread = threading.Thread(target=generate)  # like the hub's job thread
            thread.start()
            thread.join()
            assert out[0].shape[1] - input_ids.shape[1] == tokens

        def core_generate():
            *_, last = generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=tokens, decoding="greedy"))
            assert len(last.new_ids) == tokens

        def api_generate():
            event_id = http.post(
                f"{url}gradio_api/call/generate", json={"data": [PROMPT, tokens, "greedy", 0.8, 50, 0.95, 1.0, 0]}
            )
            updates = 0
            with http.stream("GET", f"{url}gradio_api/call/generate/{event_id.json()['event_id']}") as stream:
                for line in stream.iter_lines():  # read as it arrives: a browser's EventSource, or curl -N
                    if line.startswith("event: "):
                        event = line[len("event: ") :]
                        updates += event == "generating"
                    elif line.startswith("data: ") and event in ("complete", "error"):
                        assert event == "complete", line
                        assert isinstance(json.loads(line[len("data: ") :])[0], str)  # random weights: may be ""
                        break
            assert updates > 1, updates

        gen = alternate({"bare": bare_generate, "core": core_generate, "api": api_generate}, repeat)

        inputs = fill.tokenizer(MASKED, return_tensors="pt")

        def bare_forward():
            with torch.inference_mode():
                fill.model(**inputs)

        mask = alternate(
            {
                "bare": bare_forward,
                "core": lambda: fill_mask(fill, MASKED, 5),
                "api": lambda: client.predict(MASKED, 5, api_name="/fill_mask"),
            },
            repeat * 4,
        )
    finally:
        http.close()
        app.close()

    rows = []
    for path in ("core", "api"):
        rows.append(
            {
                "dtype": name,
                "measure": f"GPT-2 {tokens} tokens, greedy: tokens/s",
                "path": "hub core" if path == "core" else "HTTP API (streamed)",
                "bare": f"{tokens / gen['bare']:.1f}",
                "hub": f"{tokens / gen[path]:.1f}",
                "hub / bare": f"{gen['bare'] / gen[path]:.0%} of bare speed",
                "target met": "yes" if gen["bare"] / gen[path] >= 0.95 else "NO",
            }
        )
    for path in ("core", "api"):
        rows.append(
            {
                "dtype": name,
                "measure": "BERT fill-mask: ms per request",
                "path": "hub core" if path == "core" else "HTTP API",
                "bare": f"{mask['bare'] * 1000:.0f}",
                "hub": f"{mask[path] * 1000:.0f}",
                "hub / bare": f"{mask[path] / mask['bare']:.2f}x",
                "target met": "yes" if within_target(mask[path], mask["bare"], round_trip) else "NO",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    round_trip = do_nothing_round_trip()
    with tempfile.TemporaryDirectory() as folder:
        models = build_full_size_models(Path(folder))
        rows = []
        auto = resolve_dtype("auto", pick_device())
        for dtype in ("float32",) if auto == torch.float32 else ("float32", "auto"):
            rows += bench_dtype(dtype, models, args.tokens, args.repeat, round_trip)
    print(f"\nCPU: {cpu_name()}; `auto` picks {str(auto).replace('torch.', '')} here")
    print(f"Gradio do-nothing round trip (gradio_client, loopback): {round_trip * 1000:.0f} ms")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
