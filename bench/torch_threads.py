"""Does running torch from more than one thread slow it down on this machine? (libgomp, the OpenMP runtime that
PyPI's torch ships, stops spinning at its barriers once it manages more threads than there are cores.)

    python -m bench.torch_threads            # GPT-2 124M shape, random weights, greedy, 48 tokens

Prints tokens/s for: the main thread alone; a short-lived thread after it; the main thread again; a pool's
long-lived worker; the main thread while that worker lives; and, in a fresh process, one long-lived worker thread
that runs every torch call. On 2 cores the second line is typically ~40% slower.
"""

import subprocess
import sys
import threading
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tokens_per_s(model: GPT2LMHeadModel, ids: torch.Tensor, new: int = 48) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
        return new / (time.perf_counter() - start)


def in_thread(fn):
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def build() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).eval()


def main(only_worker: bool) -> None:
    ids = torch.randint(0, 50_000, (1, 12))
    if only_worker:  # every torch call of this process, the model's construction included, on one worker thread
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1)
        model = pool.submit(build).result()
        rates = [pool.submit(tokens_per_s, model, ids).result() for _ in range(3)]
        print(f"one long-lived worker thread only:      {' '.join(f'{r:5.1f}' for r in rates)} tok/s")
        return
    model = build()
    print(
        f"main thread alone:                      {' '.join(f'{tokens_per_s(model, ids):5.1f}' for _ in range(2))} tok/s"
    )
    print(
        f"a second thread, after the main one:    {' '.join(f'{in_thread(lambda: tokens_per_s(model, ids)):5.1f}' for _ in range(2))} tok/s"
    )
    print(
        f"main thread again (that thread ended):  {' '.join(f'{tokens_per_s(model, ids):5.1f}' for _ in range(2))} tok/s"
    )
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)  # a long-lived worker, as a server's thread pool keeps
    print(
        f"a pool's worker thread:                 {' '.join(f'{pool.submit(tokens_per_s, model, ids).result():5.1f}' for _ in range(2))} tok/s"
    )
    print(
        f"main thread while that worker lives:    {' '.join(f'{tokens_per_s(model, ids):5.1f}' for _ in range(2))} tok/s"
    )
    subprocess.run([sys.executable, __file__, "--only-worker"], check=True)


if __name__ == "__main__":
    main("--only-worker" in sys.argv)
