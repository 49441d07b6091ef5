"""Where models run, and in which number format."""

import functools
import time

import torch

from hub import model_thread


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def bfloat16_is_faster(device: str) -> bool:
    """Time a matmul in both formats: CPUs with matrix units run bf16 several times faster, others slower. The
    timing runs on the model thread, as all torch work does."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()

    def seconds(dtype: torch.dtype) -> float:
        """The best of five timings: a format's first products on a thread are slow (oneDNN builds its kernels
        then), and one warm-up product is not always enough, which made `auto` pick float32 on a bf16 CPU."""
        a = torch.randn(512, 512).to(dtype)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                a @ a
            best = min(best, time.perf_counter() - start)
        return best

    def faster() -> bool:
        try:
            return seconds(torch.bfloat16) < 0.8 * seconds(torch.float32)
        except RuntimeError:  # no bf16 kernels on this CPU
            return False

    return model_thread.run(faster)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """Turn the --dtype setting into a torch dtype; "auto" picks bf16 only where it runs faster."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if name == "auto":
        return torch.bfloat16 if bfloat16_is_faster(device) else torch.float32
    raise ValueError(f"unknown dtype {name!r}: use auto, float32 or bfloat16")
