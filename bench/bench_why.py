"""Why this prediction: each view's time on full-size GPT-2 (GPT2Config(), 124M, random weights built offline) for a
20-token prompt: integrated gradients with 32 steps, the three methods the tab shows, activation patching (every
layer x position and every head), induction heads (50 random tokens twice) and branches (3 temperatures x 24 tokens).

Random weights do the same arithmetic as the real model without a download. Run: python -m bench.bench_why
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from bench.common import cpu_name, markdown_table
from demos import find_demos
from demos.why_this_prediction import attribution as attr
from demos.why_this_prediction import branches as br
from demos.why_this_prediction import induction as ind
from demos.why_this_prediction import patching as pat
from hub import tiny
from hub.inside import load_transformer
from hub.models import ModelStore
from hub.settings import Settings

SENTENCE = "The Eiffel Tower is in the city of Paris, and the river that runs through that city is called the Seine."
TARGETS = {"attribution (integrated gradients, 32 steps)": 3.0, "patching (layers x positions + heads)": 10.0,
           "induction (50 tokens twice)": 1.0}  # fmt: skip


def build_gpt2(folder: Path) -> str:
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    tiny.gpt2_tokenizer(max_length=1024).save_pretrained(folder)
    return str(folder)


def prompt_of(tokenizer, n: int, sentence: str = SENTENCE) -> str:
    """The shortest start of the sentence that is n tokens long."""
    for end in range(1, len(sentence) + 1):
        if len(tokenizer(sentence[:end]).input_ids) == n:
            return sentence[:end]
    raise RuntimeError(f"no prompt of {n} tokens")


def median_time(fn, repeat: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds (this process, all its threads) of `repeat` calls after a warm-up. On a
    machine shared with other jobs the wall clock grows with their load; the CPU time much less."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--views", default="", help="time only the views whose name starts with one of these (comma separated)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = build_gpt2(Path(folder) / "gpt2")
        settings = Settings(dtype=args.dtype, models={"text-generation": source}, demos=["why-this-prediction"])
        store = ModelStore(settings, find_demos(settings.demos))
        t = load_transformer(store, "decoder")
        clean = prompt_of(t.tokenizer, 20)
        corrupted = prompt_of(t.tokenizer, 20, SENTENCE.replace("Eiffel Tower", "Colosseum"))
        loaded = store.get("text-generation")
        decoder = br.Decoder(loaded.model, loaded.tokenizer)
        loaded.model.generation_config.min_new_tokens = 24  # random weights may pick end-of-text: always make 24
        calls = {
            "attribution (integrated gradients, 32 steps)": lambda: attr.attribution(t, clean, steps=32),
            "attribution (all three methods, as the tab)": lambda: attr.compare_methods(t, clean, steps=32),
            "patching (layers x positions + heads)": lambda: pat.patching(t, clean, corrupted),
            "induction (50 tokens twice)": lambda: ind.induction(t, 50, 0),
            "branches (3 temperatures x 24 tokens)": lambda: br.branches(decoder, clean, [0.0, 0.7, 1.2], 24, 0),
        }
        print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; dtype {str(store.dtype).replace('torch.', '')}")
        print(f"GPT-2 124M (random weights), prompt of 20 tokens; median of {args.repeat} runs after a warm-up")
        print("load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        rows = []
        wanted = [part.strip() for part in args.views.split(",") if part.strip()]
        calls = {name: call for name, call in calls.items() if not wanted or name.startswith(tuple(wanted))}
        for name, call in calls.items():
            seconds, cpu = median_time(call, args.repeat)
            target = TARGETS.get(name)
            verdict = "" if target is None else ("yes" if seconds < target else "NO")
            load = os.getloadavg()[0]
            rows.append({"view": name, "seconds": f"{seconds:.2f}", "CPU seconds": f"{cpu:.2f}",
                         "load average": f"{load:.1f}", "target": target or "", "met": verdict})  # fmt: skip
            # as it goes: a busy machine may not finish them all
            print(f"{name}: {seconds:.2f} s, CPU {cpu:.2f} s (load average {load:.2f})", flush=True)
    print(markdown_table(rows))
    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
