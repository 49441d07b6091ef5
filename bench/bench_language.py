"""GPT-2 streaming and BERT fill-mask: the hub's HTTP API against the bare library call, in one run.

Random-weight models of the default architectures at full size (GPT-2 124M, BERT base) do the same arithmetic as
the real ones without a download. Run: python -m bench.bench_language [--tokens 48] [--repeat 5] [--visitors 16]
(a few minutes on 2 cores; `auto` is measured only where it picks another dtype than float32).

The hub serves from a process of its own (bench.serve_hub); the bare calls run in this process's main thread, its
only torch thread, as a plain script runs them; hub and bare calls alternate. The streamed request is read as a
browser or curl reads it: Gradio's documented `/gradio_api/call/generate` route, its server-sent events read as
they arrive. Then many visitors at once: streams (total tokens/s against one visitor's, and each one's first token)
and fill-mask requests (requests/s against one visitor's, each read as a browser reads it). Last, a fill-mask
request while someone fine-tunes or draws an image (tiny models for those two), against the same request on an idle
hub.
"""

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from gradio_client import Client
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from bench.common import BrowserClient, alternate, browser_round_trip, cpu_name, markdown_table, server_process
from demos.language.fill_mask import load_fill_mask
from demos.language.text_generation import load_text_generator
from hub import tiny

PROMPT = "The history of the transformer begins with a paper about attention, and since then"
MASKED = "The history of the [MASK] begins with a paper about attention, and since then it has changed."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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


def stream_generate(
    visitor: BrowserClient, tokens: int, decoding: str = "greedy", seed: int = 0
) -> tuple[float, float]:
    """One /generate request read as a browser reads its stream: (seconds to the first token, seconds in all).
    `visitor` holds the page's open connection and session (a page is open before Generate is pressed; making an
    httpx client costs tens of milliseconds of CPU). The stream opens with an empty update and then sends one per
    new batch of tokens, so the first token is the second update. Its text may still be empty: the random model
    draws ids the small tokenizer decodes to nothing."""
    start, first, updates = time.perf_counter(), None, 0
    data = [PROMPT, tokens, decoding, 0.8, 50, 0.95, 1.0, seed]
    for event, payload in visitor.events("generate", *data):  # as they arrive: a browser's EventSource, or curl -N
        if event == "generating":
            updates += 1
            if first is None and (updates == 2 or json.loads(payload)[0]):
                first = time.perf_counter() - start
        assert event != "error", payload
    total = time.perf_counter() - start
    return (total if first is None else first), total


def at_once(call: Callable[[int], object], visitors: int) -> tuple[float, list]:
    """Seconds for `visitors` callers started together, and each one's result."""
    with ThreadPoolExecutor(visitors) as pool:
        start = time.perf_counter()
        results = list(pool.map(call, range(visitors)))
    return time.perf_counter() - start, results


def bench_language(
    dtype: str, models: dict[str, str], cache: Path, args, round_trip: float, measured: set[str]
) -> list[dict]:
    """The rows for one dtype setting; none when it resolves to a dtype already `measured` (`auto` may)."""
    settings = {
        "demos": ["text-generation", "fill-mask"],
        "models": models,
        "dtype": dtype,
        "cache_dir": str(cache),
        "always_make_every_token": True,
    }
    with server_process("bench.serve_hub", json.dumps(settings)) as hub:
        url, resolved = hub["url"], hub["dtype"]
        if resolved in measured:
            print(f"`{dtype}` picks {resolved} here: measured above.")
            return []
        measured.add(resolved)
        # The bare side: the same weights in the same dtype, in this process's main thread.
        generator = load_text_generator(models["text-generation"], DTYPES[resolved])
        fill = load_fill_mask(models["fill-mask"], DTYPES[resolved])
        input_ids = generator.tokenizer(PROMPT, return_tensors="pt").input_ids

        def bare_generate() -> None:
            with torch.inference_mode():
                out = generator.model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens, do_sample=False, pad_token_id=0,
                )  # fmt: skip
            assert out.shape[1] - input_ids.shape[1] == args.tokens

        # Each visitor's connection is open before they press Generate, as their browser's page is.
        visitors = [BrowserClient(url) for _ in range(args.visitors)]
        read = lambda n, decoding="greedy": stream_generate(visitors[n], args.tokens, decoding, n)  # noqa: E731
        gen = alternate({"bare": bare_generate, "hub": lambda: read(0)}, args.repeat)
        one_visitor_tps = args.tokens / gen["hub"]
        # The many visitors sample (each their own seed): against the same request from one visitor alone.
        alone = alternate({"sampling": lambda: read(0, "sampling")}, args.repeat)
        one_sampling_tps = args.tokens / alone["sampling"]
        wall, streams = at_once(lambda n: read(n, "sampling"), args.visitors)
        many_tps = args.visitors * args.tokens / wall
        first_tokens = sorted(first for first, _ in streams)

        inputs = fill.tokenizer(MASKED, return_tensors="pt")
        sixteen = {name: tensor.repeat(16, 1) for name, tensor in inputs.items()}

        def bare_fill(batch: dict = inputs) -> None:
            with torch.inference_mode():
                fill.model(**batch).logits.softmax(-1).topk(5)

        # Single requests and many visitors are read as a browser reads them (bench.common.BrowserClient).
        ask = lambda n=0: visitors[n].call("fill_mask", MASKED, 5)  # noqa: E731
        # "bare 16" is the library's own best with many: 16 texts in one forward pass, the batching's ceiling.
        mask = alternate({"bare": bare_fill, "hub": ask, "bare 16": lambda: bare_fill(sixteen)}, args.repeat * 4)
        requests = 4

        def visitor(n: int) -> None:
            for _ in range(requests):
                ask(n)

        one_rps = requests / statistics.median(at_once(visitor, 1)[0] for _ in range(3))
        many_rps = args.visitors * requests / at_once(visitor, args.visitors)[0]
        for client in visitors:
            client.close()

    print(
        f"{resolved}: generation {gen}; sampling alone {alone}; {args.visitors} streams {wall:.1f} s, "
        f"first tokens {first_tokens}; "
        f"fill-mask {mask}; fill-mask requests/s {one_rps:.2f} alone, {many_rps:.2f} with {args.visitors}",
        flush=True,
    )
    tps = args.tokens / gen["bare"]
    rows = [
        {
            "dtype": resolved,
            "measure": f"GPT-2 {args.tokens} tokens, greedy, /generate streamed",
            "bare script": f"{tps:.1f} tokens/s",
            "hub": f"{one_visitor_tps:.1f} tokens/s",
            "ratio": f"{one_visitor_tps / tps:.2f}x bare",
            "target": ">= 0.95x",
            "met": "yes" if one_visitor_tps >= 0.95 * tps else "NO",
        },
        {
            "dtype": resolved,
            "measure": f"{args.visitors} visitors streaming {args.tokens} tokens at once (sampling)",
            "bare script": "",
            "hub": f"{many_tps:.1f} tokens/s in all; first tokens {first_tokens[0]:.1f}-{first_tokens[-1]:.1f} s",
            "ratio": f"{many_tps / one_sampling_tps:.2f}x one visitor ({one_sampling_tps:.1f} tokens/s)",
            "target": ">= 4x, first token <= 2 s",
            "met": "yes" if many_tps >= 4 * one_sampling_tps and first_tokens[-1] <= 2 else "NO",
        },
        {
            "dtype": resolved,
            "measure": "BERT /fill_mask, one request",
            "bare script": f"{mask['bare'] * 1e3:.0f} ms",
            "hub": f"{mask['hub'] * 1e3:.0f} ms",
            "ratio": f"hub - bare - round trip = {(mask['hub'] - mask['bare'] - round_trip) * 1e3:.0f} ms",
            "target": f"<= {(mask['bare'] + round_trip + 0.010) * 1e3:.0f} ms",
            "met": "yes" if mask["hub"] <= mask["bare"] + round_trip + 0.010 else "NO",
        },
        {
            "dtype": resolved,
            "measure": f"{args.visitors} visitors on /fill_mask at once",
            "bare script": f"16 texts in one pass: {mask['bare'] * 16 / mask['bare 16']:.2f}x one text's speed",
            "hub": f"{many_rps:.1f} requests/s (one visitor: {one_rps:.1f})",
            "ratio": f"{many_rps / one_rps:.2f}x one visitor",
            "target": ">= 2x",
            "met": "yes" if many_rps >= 2 * one_rps else "NO",
        },
    ]
    return rows


def bench_beside_long_jobs(models: dict[str, str], cache: Path, args) -> list[dict]:
    """A fill-mask request while someone fine-tunes or draws an image, against the same request on an idle hub."""
    settings = {
        "demos": ["fill-mask", "fine-tune", "text-to-image"],
        "models": {"fill-mask": models["fill-mask"]},
        "preset": "tiny",  # tiny fine-tune and text-to-image models: no download
        "dtype": "float32",
        "cache_dir": str(cache),
        "image_budget": 1000.0,  # a long run to measure beside
    }
    rows = []
    with server_process("bench.serve_hub", json.dumps(settings)) as hub:
        visitor = BrowserClient(hub["url"])
        fill = lambda: visitor.call("fill_mask", MASKED, 5)  # noqa: E731
        idle = alternate({"idle": fill}, args.repeat * 2)["idle"]
        long_jobs = {
            "fine-tune (10 epochs, batch 1)": lambda c: c.submit(
                "Built-in: sentiment of short reviews", None, "text", "label", 10, 1e-4, 1, api_name="/fine_tune"
            ),
            "text-to-image (50 steps, 512x512)": lambda c: c.submit(
                "a cat", "", 50, 0.0, 512, 512, 0, 1, True, api_name="/text_to_image"
            ),
        }
        for name, start in long_jobs.items():
            job = start(Client(hub["url"], verbose=False))  # gradio_client: its Job can cancel the run
            time.sleep(3)  # the job is under way
            during = []
            for _ in range(args.repeat * 2):
                began = time.perf_counter()
                fill()
                during.append(time.perf_counter() - began)
            running = not job.done()
            job.cancel()
            median = statistics.median(during)
            rows.append(
                {
                    "measure": f"/fill_mask during {name}" + ("" if running else " (the job ended before the last)"),
                    "idle ms": f"{idle * 1e3:.0f}",
                    "during ms": f"{median * 1e3:.0f}",
                    "ratio": f"{median / idle:.2f}x idle",
                    "target": "<= 2x",
                    "met": "yes" if median <= 2 * idle else "NO",
                }
            )
        visitor.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--visitors", type=int, default=16)
    parser.add_argument("--dtypes", default="float32,auto", help="comma-separated dtypes [%(default)s]")
    parser.add_argument("--skip-long-jobs", action="store_true", help="leave out fill-mask beside long jobs")
    args = parser.parse_args()
    round_trip = browser_round_trip()
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    print(
        f"Gradio do-nothing round trip (REST and server-sent events, loopback, a server process of its own): "
        f"{round_trip * 1e3:.0f} ms",
        flush=True,
    )
    rows, measured = [], set()
    with tempfile.TemporaryDirectory(prefix="bench-language-") as folder:
        models = build_full_size_models(Path(folder))
        for dtype in args.dtypes.split(","):
            rows += bench_language(dtype, models, Path(folder) / "cache", args, round_trip, measured)
        long_rows = [] if args.skip_long_jobs else bench_beside_long_jobs(models, Path(folder) / "cache", args)
    print()
    print(markdown_table(rows))
    if long_rows:
        print()
        print(markdown_table(long_rows))


if __name__ == "__main__":
    main()
