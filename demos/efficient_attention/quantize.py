"""Quantization: the same GPT-2 in float32, bfloat16 and with int8 weights, side by side: size, speed, the
next-token top 5, and how often each one's top token agrees with float32's over a greedy continuation.

GPT-2's layers are transformers' Conv1D (y = x W + b, W stored as in x out), not nn.Linear, and
torch.ao.quantization.quantize_dynamic only swaps nn.Linear: run on GPT-2 as it is, it quantizes nothing in the
blocks. So the int8 model is built in two steps: each block's Conv1D becomes the nn.Linear that computes the same
thing (weight = W transposed), then quantize_dynamic turns those into int8 weights with float activations
(quantized per tensor, activations quantized on the fly). The token embeddings and the output head (the same tied
matrix) stay float32. The copies are built once per loaded model and kept: each is a new module."""

import copy
import io
import threading
import time
import warnings

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, StoppingCriteria, StoppingCriteriaList
from transformers.pytorch_utils import Conv1D

from demos.efficient_attention.decoder import MEGABYTE, context, token_ids
from demos.language.text_generation import TextGenerator
from hub.device import bfloat16_is_faster
from hub.errors import HubError
from hub.jobs import Job
from hub.models import weight_sharing_copy

VARIANTS = ("float32", "bfloat16", "int8")
GREEDY_TOKENS = 64
TOP = 5
MAX_PROMPT_TOKENS = 192


def linear_from_conv1d(conv: Conv1D) -> nn.Linear:
    """The nn.Linear that computes what a transformers Conv1D computes (its weight is stored transposed)."""
    n_in, n_out = conv.weight.shape
    linear = nn.Linear(n_in, n_out, dtype=conv.weight.dtype, device=conv.weight.device)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    return linear


def conv1d_to_linear(module: nn.Module) -> int:
    """Replace every Conv1D inside `module` by its nn.Linear (in place: call it on a copy); returns how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, Conv1D):
            setattr(module, name, linear_from_conv1d(child))
            swapped += 1
        else:
            swapped += conv1d_to_linear(child)
    return swapped


def int8_model(float32: PreTrainedModel) -> PreTrainedModel:
    """A new GPT-2 whose blocks' linear layers hold int8 weights; embeddings, norms and the (tied) output head
    are float32 tensors shared with `float32`, which is left untouched."""
    model = weight_sharing_copy(float32)
    blocks = model.transformer.h
    conv1d_to_linear(blocks)  # new nn.Linear modules in the copy's tree only
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao; it still runs
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(blocks, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model.eval()


def model_megabytes(model: nn.Module) -> float:
    """The size of the model's saved weights (torch.save of its state dict; a tied tensor counts once)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buffer)
    return buffer.tell() / MEGABYTE


class Variants:
    """float32, bfloat16 and int8 copies of one loaded model, made on first use and kept."""

    def __init__(self, models: dict[str, PreTrainedModel], notes: dict[str, str], sizes: dict[str, float]):
        self.models, self.notes, self.sizes = models, notes, sizes


_variants: dict[int, Variants] = {}
_lock = threading.Lock()
BF16_ABSENT = (
    "bfloat16 is left out: on this CPU a bfloat16 matrix product is not faster than float32 (no bfloat16 matrix "
    "units), so it would only be slower."
)


def float32_reference(generator: TextGenerator) -> PreTrainedModel:
    """The loaded model where it runs float32; otherwise the checkpoint read again in float32 (a bfloat16 copy
    cannot give the float32 weights back)."""
    if generator.model.dtype == torch.float32:
        return generator.model
    return AutoModelForCausalLM.from_pretrained(generator.source, dtype=torch.float32, use_safetensors=True).eval()


def variants(generator: TextGenerator) -> Variants:
    key = id(generator.model)
    with _lock:
        if key not in _variants:
            float32 = float32_reference(generator)
            models, notes = {"float32": float32}, {}
            device = generator.model.device.type
            if not bfloat16_is_faster(device):
                notes["bfloat16"] = BF16_ABSENT
            elif generator.model.dtype == torch.bfloat16:
                models["bfloat16"] = generator.model
            else:
                models["bfloat16"] = copy.deepcopy(float32).to(torch.bfloat16).eval()
            models["int8"] = int8_model(float32)
            _variants[key] = Variants(models, notes, {name: model_megabytes(m) for name, m in models.items()})
        return _variants[key]


class _Watch(StoppingCriteria):
    def __init__(self, job: Job | None):
        self.job = job

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        stop = self.job is not None and self.job.should_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)


def greedy(model: PreTrainedModel, ids: torch.Tensor, eos: int, job: Job | None) -> tuple[list[int], float]:
    """GREEDY_TOKENS new tokens, greedily; and tokens per second."""
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS,
                             min_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=eos,
                             stopping_criteria=StoppingCriteriaList([_Watch(job)]))  # fmt: skip
        seconds = time.perf_counter() - start
    new = out[0, ids.shape[1] :].tolist()
    return new, len(new) / seconds


def next_token_top5(generator: TextGenerator, model: PreTrainedModel, ids: torch.Tensor) -> list[list]:
    """[[token, probability], ...]: the model's TOP most likely next tokens after the text."""
    with torch.inference_mode():
        probs = model(input_ids=ids).logits[0, -1].float().softmax(-1)
    top = probs.topk(TOP)
    return [[generator.tokenizer.decode([i]), p] for i, p in zip(top.indices.tolist(), top.values.tolist())]


def top_choices(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """The model's top token at every position of `ids` (one forward pass)."""
    with torch.inference_mode():
        return model(input_ids=ids).logits[0].float().argmax(-1)


def quantize(generator: TextGenerator, text: str, job: Job | None = None) -> dict:
    """Each variant: size in MB, tokens/s over a greedy run of GREEDY_TOKENS, the next-token top 5 after the text,
    and the fraction of the GREEDY_TOKENS positions of float32's greedy continuation where its top token is
    float32's (each model reads the text plus that continuation once)."""
    ids = token_ids(generator, text, min(MAX_PROMPT_TOKENS, context(generator) - GREEDY_TOKENS))
    made = variants(generator)
    n, results = ids.shape[1], {}
    continuation = reference = None
    for name, model in made.models.items():  # float32 first: the others are compared with it
        new, speed = greedy(model, ids, generator.tokenizer.eos_token_id, job)
        if job is not None and job.should_stop():
            raise HubError("The time limit ran out." if job.out_of_time() else "Stopped.")
        if continuation is None:
            continuation = torch.tensor([new], device=ids.device)
        chosen = top_choices(model, torch.cat([ids, continuation], dim=1))[n - 1 : -1]  # before each new token
        reference = chosen if reference is None else reference
        results[name] = {
            "mb": made.sizes[name],
            "tokens_per_s": speed,
            "top5": next_token_top5(generator, model, ids),
            "agreement_with_float32": float((chosen == reference).float().mean()),
        }
    return {
        "variants": results,
        "absent": made.notes,
        "prompt_tokens": n,
        "greedy_tokens": GREEDY_TOKENS,
        "float32_continuation": generator.tokenizer.decode(continuation[0]),
    }


def quantize_code(source: str, text: str) -> str:
    return f"""import copy
import io
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D

tokenizer = AutoTokenizer.from_pretrained({source!r})
model = AutoModelForCausalLM.from_pretrained({source!r}, dtype=torch.float32).eval()


def conv1d_to_linear(module):  # GPT-2's Conv1D computes x @ W + b; quantize_dynamic only knows nn.Linear
    for name, child in module.named_children():
        if isinstance(child, Conv1D):
            linear = nn.Linear(*child.weight.shape)
            linear.weight.data, linear.bias.data = child.weight.t().contiguous(), child.bias.data
            setattr(module, name, linear)
        else:
            conv1d_to_linear(child)


int8 = copy.deepcopy(model)
conv1d_to_linear(int8.transformer.h)  # the blocks; embeddings and the tied output head stay float32
torch.ao.quantization.quantize_dynamic(int8.transformer.h, {{nn.Linear}}, dtype=torch.qint8, inplace=True)
variants = {{"float32": model, "bfloat16": copy.deepcopy(model).to(torch.bfloat16), "int8": int8}}

ids = tokenizer({text!r}, return_tensors="pt").input_ids
for name, m in variants.items():
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    with torch.no_grad():
        probs = m(input_ids=ids).logits[0, -1].float().softmax(-1)
    top = probs.topk(5)
    top5 = [(tokenizer.decode([i]), round(p, 6)) for i, p in zip(top.indices.tolist(), top.values.tolist())]
    print(name, "MB:", round(buffer.tell() / 1e6, 3), "top 5:", top5)
"""
