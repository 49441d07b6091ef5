"""The efficient-transformers views on a random-weight GPT-2 124M (the default architecture at full size, no
download): /kv_cache, /sparse_attention and /quantize through the core and the HTTP API against the bare library
calls on the same model, run in turns, and the numbers each view shows. Run: python -m bench.bench_efficient_attention
"""

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.bench_language import build_full_size_models
from bench.common import cpu_name, do_nothing_round_trip, free_port, markdown_table
from demos import find_demos
from demos.efficient_attention.kv_cache import kv_cache
from demos.efficient_attention.quantize import GREEDY_TOKENS, quantize, variants
from demos.efficient_attention.sparse import additive_mask, attention_timing, pattern_mask, sparse_attention
from demos.efficient_attention.tab import DEFAULT_TEXT
from hub.app import build_app, launch
from hub.models import ModelStore
from hub.settings import Settings

NEW_TOKENS = 16
PROMPT_TOKENS = 50  # the tab's default text in GPT-2's own tokenizer


def on_a_worker_thread(call):
    """Run the call on a new thread, as the hub runs its jobs: on this 2-core machine, torch called from the main
    thread of a process whose other threads had run torch ran about 13 times slower than the same work on a worker
    thread (the OpenMP pools of the two threads compete)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(call()))
    thread.start()
    thread.join()
    return box[0] if box else None


def in_turns(calls: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each call, run in turn (bare, core, API) so that the machine's noise hits them alike. No
    warm-up round: the model and the quantized copies are built before, and each call is seconds long."""
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            on_a_worker_thread(call)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    started = time.perf_counter()
    round_trip = do_nothing_round_trip()
    with tempfile.TemporaryDirectory() as folder:
        models = build_full_size_models(Path(folder))
        settings = Settings(dtype=args.dtype, models=models, demos=["efficient-attention"], port=free_port())
        store = ModelStore(settings, find_demos(settings.demos))
        generator = store.get("text-generation")
        generator.model.generation_config.min_new_tokens = NEW_TOKENS  # random weights may pick EOS early
        app = build_app(settings, store)
        for attempt in range(3):  # on a loaded machine Gradio's own check that the server answers can time out
            try:
                _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
                break
            except ValueError:
                app.close()
                if attempt == 2:
                    raise
        from gradio_client import Client

        client = Client(url, verbose=False)
        model, eos = generator.model, generator.tokenizer.eos_token_id
        # The small tokenizer cuts words finer than GPT-2's: keep the tab's default text to GPT-2's length for it.
        text = generator.tokenizer.decode(generator.tokenizer(DEFAULT_TEXT).input_ids[:PROMPT_TOKENS])
        ids = generator.tokenizer(text, return_tensors="pt").input_ids

        def bare_kv():
            with torch.inference_mode():
                for use_cache in (True, False):
                    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                   do_sample=False, use_cache=use_cache, pad_token_id=eos)  # fmt: skip

        mask = additive_mask(pattern_mask("sliding_window", ids.shape[1], 8), model.dtype)

        def bare_sparse():
            with torch.inference_mode():
                for kwargs in ({}, {"attention_mask": mask}):
                    logits = model(input_ids=ids, **kwargs).logits[0, :-1].float()
                    math.exp(F.cross_entropy(logits, ids[0, 1:]).item())

        built = time.perf_counter()
        made = on_a_worker_thread(lambda: variants(generator))
        build_s = time.perf_counter() - built

        def bare_quantize():
            with torch.inference_mode():
                for m in made.models.values():
                    new = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS,
                                     min_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=eos)  # fmt: skip
                    m(input_ids=new)
                    m(input_ids=ids)

        rows = []
        try:
            for view, calls in (
                ("kv_cache", {
                    "bare": bare_kv,
                    "core": lambda: kv_cache(generator, text, NEW_TOKENS),
                    "api": lambda: client.predict(text, NEW_TOKENS, api_name="/kv_cache"),
                }),
                ("sparse_attention", {
                    "bare": bare_sparse,
                    "core": lambda: sparse_attention(generator, text, "sliding_window", 8),
                    "api": lambda: client.predict(text, "sliding_window", 8, api_name="/sparse_attention"),
                }),
                ("quantize", {
                    "bare": bare_quantize,
                    "core": lambda: quantize(generator, text),
                    "api": lambda: client.predict(text, api_name="/quantize"),
                }),
            ):  # fmt: skip
                times = in_turns(calls, args.repeat)
                rows.append({"view": view, **{f"{name} s": f"{s:.2f}" for name, s in times.items()}})
                print(rows[-1], flush=True)
            kv = on_a_worker_thread(lambda: kv_cache(generator, text, NEW_TOKENS))
            timing = on_a_worker_thread(lambda: attention_timing(generator, text, 32))
            quantized = on_a_worker_thread(lambda: quantize(generator, text))
        finally:
            app.close()
    print(f"CPU: {cpu_name()}; dtype {store.dtype}; do-nothing round trip {1000 * round_trip:.0f} ms; "
          f"building the quantized copies {build_s:.1f} s")  # fmt: skip
    print(markdown_table(rows))
    later = slice(1, None)
    print(json.dumps({
        "kv_cache": {
            "prompt_tokens": kv["prompt_tokens"], "new_tokens": NEW_TOKENS, "same_text": kv["same_text"],
            "ms_per_token_cached_after_first": round(sum(kv["ms_per_token_cached"][later]) / (NEW_TOKENS - 1), 1),
            "ms_per_token_uncached_after_first": round(sum(kv["ms_per_token_uncached"][later]) / (NEW_TOKENS - 1), 1),
            "cache_mb_last": round(kv["cache_mb"][-1], 2),
        },
        "attention_timing_window_32": {k: [round(v, 2) for v in vs] for k, vs in timing.items()},
        "quantize": {name: {"mb": round(v["mb"], 1), "tokens_per_s": round(v["tokens_per_s"], 1),
                            "agreement_with_float32": v["agreement_with_float32"]}
                     for name, v in quantized["variants"].items()} | {"absent": quantized["absent"]},
    }, indent=1))  # fmt: skip
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
