"""Efficient transformers on the tiny GPT-2: the KV cache's sizes against its own tensors and its text against
transformers' generate, each sparse mask's perplexity against a masked forward run here, the int8 model against
one quantized here, the Code accordions run as shown, then the endpoints over HTTP: hostile input, cancel."""

import ast
import contextlib
import copy
import io
import math
import time

import gradio as gr
import pytest
import requests
import torch
from gradio.utils import get_function_description
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D

from demos.efficient_attention.decoder import load_decoder
from demos.efficient_attention.kv_cache import cache_code, kv_cache
from demos.efficient_attention.quantize import BF16_ABSENT, quantize, quantize_code, variants
from demos.efficient_attention.sparse import (
    GLOBAL_TOKENS,
    PATTERNS,
    attention_timing,
    dense_attention,
    pattern_mask,
    sliding_window_attention,
    sparse_attention,
    sparse_code,
)
from demos.efficient_attention.tab import register_api, run_job
from hub.device import bfloat16_is_faster
from hub.errors import HubError
from hub.jobs import Job, running_jobs
from tests.rest import error_message, rest_call

PROMPT = "the cat sat on the mat and the dog"
TEXT = "the cat sat on the mat and the dog sat on the log , and then the cat ran away from the dog"


@pytest.fixture(scope="module")
def generator(store):
    return load_decoder(store)


@pytest.fixture(scope="module")
def folder(tiny_model_dir):
    return tiny_model_dir("text-generation")


@pytest.fixture(scope="module")
def fresh(folder):
    """The same weights loaded again, apart from the hub: the independent side of each comparison."""
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def run_code(code: str) -> list[str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    return printed.getvalue().splitlines()


def printed_value(lines: list[str], label: str):
    line = next(line for line in lines if line.startswith(label))
    return ast.literal_eval(line[len(label) :].strip())


# --- KV cache ----------------------------------------------------------------------------------------------


def test_cache_sizes_equal_the_cache_tensors_own_sizes(generator, fresh):
    model, tokenizer = fresh
    result = kv_cache(generator, PROMPT, 6)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    n = ids.shape[1]
    assert result["positions"] == list(range(n, n + 6)) and result["prompt_tokens"] == n
    with torch.no_grad():
        written = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        for position, mb in zip(result["positions"], result["cache_mb"]):
            # When the token at `position` is chosen, the cache holds the keys and values of every position before it.
            cache = model(written[:, :position], use_cache=True).past_key_values
            tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
            assert mb == sum(t.numel() * t.element_size() for t in tensors) / 1e6
    config = model.config  # and that is layers x (keys, values) x positions x width x 4 bytes
    assert result["cache_mb"][-1] == config.n_layer * 2 * (n + 5) * config.n_embd * 4 / 1e6


def test_same_text_equals_transformers_generate_with_and_without_the_cache(generator, fresh):
    model, tokenizer = fresh
    result = kv_cache(generator, PROMPT, 8)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    texts = {}
    with torch.no_grad():
        for use_cache in (True, False):
            out = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=use_cache,
                                 pad_token_id=tokenizer.eos_token_id)  # fmt: skip
            texts[use_cache] = tokenizer.decode(out[0, ids.shape[1] :])
    assert result["text_cached"] == texts[True] and result["text_uncached"] == texts[False]
    assert result["same_text"] == (texts[True] == texts[False])
    assert len(result["ms_per_token_cached"]) == len(result["ms_per_token_uncached"]) == 8
    assert all(ms > 0 for ms in result["ms_per_token_cached"] + result["ms_per_token_uncached"])


def test_a_stopped_job_stops_the_generation(generator):
    job = Job(60)
    job.stop.set()
    with pytest.raises(HubError, match="Stopped"):
        kv_cache(generator, PROMPT, 100, job)


def test_the_kv_code_prints_the_same_text_and_sizes(store, generator):
    result = kv_cache(generator, PROMPT, 5)
    lines = run_code(cache_code(store.source("text-generation"), torch.float32, PROMPT, 5))
    assert printed_value(lines, "same text:") == result["same_text"]
    assert printed_value(lines, "cache MB:") == [round(mb, 4) for mb in result["cache_mb"]]
    assert len(printed_value(lines, "ms per token, uncached:")) == 5


# --- Sparse attention --------------------------------------------------------------------------------------


def mask_by_rule(pattern: str, n: int, w: int) -> torch.Tensor:
    """Each pattern written out cell by cell, as the papers describe it."""
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(i + 1):
            local = i - j < w
            allowed[i, j] = {
                "full": True,
                "sliding_window": local,
                "strided": local or (i - j) % w == 0,
                "window_global": local or j < GLOBAL_TOKENS,
            }[pattern]
    return allowed


@pytest.mark.parametrize("pattern", PATTERNS)
def test_sparse_perplexity_equals_a_masked_forward_run_here(generator, folder, pattern):
    result = sparse_attention(generator, TEXT, pattern, 3)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = AutoTokenizer.from_pretrained(folder)(TEXT, return_tensors="pt").input_ids
    n = ids.shape[1]
    mask = mask_by_rule(pattern, n, 3)
    assert result["mask"] == mask.int().tolist()
    assert result["scores_computed"] == int(mask.sum()) < result["scores_full"] == n * (n + 1) // 2
    additive = torch.where(mask, 0.0, float("-inf"))[None, None]  # eager attention adds it to the scores
    with torch.no_grad():
        full = math.exp(model(ids, labels=ids).loss)  # the library's own shifted next-token loss
        sparse = math.exp(model(ids, attention_mask=additive, labels=ids).loss)
    assert result["perplexity_full"] == pytest.approx(full, rel=1e-5)
    assert result["perplexity_sparse"] == pytest.approx(sparse, rel=1e-5)
    assert sparse != pytest.approx(full, rel=1e-6)  # the mask reached the model


def test_a_window_as_long_as_the_text_is_full_attention(generator):
    result = sparse_attention(generator, TEXT, "sliding_window", 256)
    assert result["perplexity_sparse"] == pytest.approx(result["perplexity_full"], rel=1e-5)
    assert result["scores_computed"] == result["scores_full"]


@pytest.mark.parametrize("n, window", [(37, 1), (37, 3), (37, 8), (20, 40), (64, 16)])
def test_the_banded_kernel_equals_dense_attention_with_the_mask(n, window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, n, 16) for _ in range(3))
    dense = dense_attention(q, k, v, pattern_mask("sliding_window", n, window))
    assert torch.allclose(sliding_window_attention(q, k, v, window), dense, atol=1e-5)


def test_timing_counts_the_scores_each_kernel_computes(generator):
    timing = attention_timing(generator, TEXT, 8)
    assert timing["lengths"] == [64, 128, 256]  # up to the tiny model's 256 positions
    assert timing["scores_full"] == [n * n for n in timing["lengths"]]
    assert timing["scores_window"] == [n * 2 * 8 for n in timing["lengths"]]


def test_the_sparse_code_prints_the_same_perplexities(store, generator):
    for pattern in PATTERNS:
        result = sparse_attention(generator, TEXT, pattern, 4)
        lines = run_code(sparse_code(store.source("text-generation"), torch.float32, TEXT, pattern, 4))
        assert printed_value(lines, "perplexity, full attention:") == pytest.approx(result["perplexity_full"], 1e-5)
        assert printed_value(lines, f"perplexity, {pattern}:") == pytest.approx(result["perplexity_sparse"], 1e-5)
        assert lines[-1] == f"scores computed: {result['scores_computed']} of {result['scores_full']}"


# --- Quantization ------------------------------------------------------------------------------------------


def quantized_here(model: nn.Module) -> nn.Module:
    """int8 written out independently: every Conv1D of the blocks as nn.Linear, then quantize_dynamic on the
    blocks (the embeddings and the output head, one tied matrix, stay float32)."""
    int8 = copy.deepcopy(model)
    for block in int8.transformer.h:
        for parent in (block.attn, block.mlp):
            for name in ("c_attn", "c_fc", "c_proj"):
                conv = getattr(parent, name, None)
                if isinstance(conv, Conv1D):
                    linear = nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
                    linear.weight.data, linear.bias.data = conv.weight.t().contiguous(), conv.bias.data
                    setattr(parent, name, linear)
    torch.ao.quantization.quantize_dynamic(int8.transformer.h, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return int8.eval()


def top5_of(model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, -1].softmax(-1)
    top = probs.topk(5)
    return [tokenizer.decode([i]) for i in top.indices.tolist()], top.values.tolist()


@pytest.fixture(scope="module")
def quantized(generator) -> dict:
    """One run of the view (each runs three greedy generations)."""
    return quantize(generator, PROMPT)


def test_quantized_top5_equals_an_independent_quantized_model(quantized, fresh):
    model, tokenizer = fresh
    result = quantized["variants"]
    int8_here = quantized_here(model)
    for name, reference in (("float32", model), ("int8", int8_here)):
        tokens, probs = top5_of(reference, tokenizer, PROMPT)
        assert [token for token, _ in result[name]["top5"]] == tokens
        assert [p for _, p in result[name]["top5"]] == pytest.approx(probs, abs=1e-6)
    assert result["float32"]["agreement_with_float32"] == 1.0
    assert all(0 <= v["agreement_with_float32"] <= 1 for v in result.values())
    saved = io.BytesIO()
    torch.save(int8_here.state_dict(), saved)
    assert result["int8"]["mb"] == saved.tell() / 1e6 < result["float32"]["mb"]


def test_the_int8_copy_is_built_once_and_leaves_the_loaded_model_alone(generator):
    made = variants(generator)
    assert made is variants(generator)
    assert isinstance(generator.model.transformer.h[0].attn.c_attn, Conv1D)  # the shared model is unchanged
    int8 = made.models["int8"]
    assert isinstance(int8.transformer.h[0].mlp.c_fc, torch.ao.nn.quantized.dynamic.Linear)  # int8 weights
    assert int8.transformer.wte.weight is generator.model.transformer.wte.weight  # shared, not copied
    if bfloat16_is_faster("cpu"):
        assert made.models["bfloat16"].dtype == torch.bfloat16 and not made.notes
    else:
        assert "bfloat16" not in made.models and made.notes["bfloat16"] == BF16_ABSENT


def test_the_quantize_code_prints_the_same_sizes_and_top5(store, quantized):
    result = quantized["variants"]
    lines = run_code(quantize_code(store.source("text-generation"), PROMPT))
    for line in lines:
        name, rest = line.split(" MB: ")
        mb, top5 = rest.split(" top 5: ")
        if name in result:
            assert float(mb) == round(result[name]["mb"], 3)
            assert [t for t, _ in ast.literal_eval(top5)] == [t for t, _ in result[name]["top5"]]
            assert [p for _, p in ast.literal_eval(top5)] == pytest.approx(
                [p for _, p in result[name]["top5"]], abs=2e-6
            )


# --- Through the HTTP API ----------------------------------------------------------------------------------


def test_api_results_equal_the_cores(client, generator, quantized):
    kv = client.predict(PROMPT, 4, api_name="/kv_cache")
    assert kv["cache_mb"] == kv_cache(generator, PROMPT, 4)["cache_mb"] and kv["same_text"] is True
    sparse = client.predict(TEXT, "window_global", 2, api_name="/sparse_attention")
    expected = sparse_attention(generator, TEXT, "window_global", 2)
    assert sparse["mask"] == expected["mask"]
    assert sparse["perplexity_sparse"] == pytest.approx(expected["perplexity_sparse"], rel=1e-9)
    api = client.predict(PROMPT, api_name="/quantize")
    expected = quantized["variants"]
    assert api["variants"]["int8"]["top5"] == [list(pair) for pair in expected["int8"]["top5"]]
    assert api["variants"]["float32"]["mb"] == expected["float32"]["mb"]


@pytest.mark.parametrize(
    "api, data, message",
    [
        ("kv_cache", [PROMPT, 0], "New tokens must be between 1 and 128"),
        ("kv_cache", [PROMPT, 129], "New tokens must be between 1 and 128"),
        ("kv_cache", [PROMPT, float("nan")], "New tokens must be between"),
        ("kv_cache", [PROMPT, 2.5], "New tokens must be a whole number"),
        ("kv_cache", [PROMPT, "8"], "New tokens must be a number"),
        ("kv_cache", [PROMPT, 10**30], "New tokens is far too large: a number of 31 digits"),
        ("kv_cache", ["", 8], "Text is empty"),
        ("kv_cache", [123, 8], "Text must be text"),
        ("kv_cache", ["the cat " * 100, 8], "at most 128"),
        ("sparse_attention", [TEXT, "dense", 8], "Pattern must be one of sliding_window, strided, window_global"),
        ("sparse_attention", [TEXT, 5, 8], "Pattern must be one of"),
        ("sparse_attention", [TEXT, "strided", 0], "Window must be between 1 and 256"),
        ("sparse_attention", [TEXT, "strided", 257], "Window must be between 1 and 256"),
        ("sparse_attention", [TEXT, "strided", float("inf")], "Window must be between"),
        ("sparse_attention", [TEXT, "strided", None], "Window must be a number"),
        ("sparse_attention", [TEXT, "strided", [8]], "Window must be a number"),
        ("sparse_attention", ["the cat " * 200, "strided", 8], "at most 25"),
        ("sparse_attention", ["\ud800", "strided", 8], "not valid Unicode"),
        ("quantize", ["   "], "Text is empty"),
        ("quantize", [{"text": 1}], "Text must be text"),
        ("quantize", ["x" * 6_000], "Text is too long"),
    ],
)
def test_rest_bad_input_gets_a_message_and_the_server_keeps_serving(hub_url, client, api, data, message):
    assert message in error_message(rest_call(hub_url, api, data))
    assert client.predict(TEXT, "strided", 4, api_name="/sparse_attention")["scores_computed"] > 0


def test_api_cancel_stops_the_run(client, store):
    model = store.get("text-generation").model
    calls = []
    hook = model.register_forward_pre_hook(lambda *args: calls.append(time.sleep(0.05)))  # 2 x 100 tokens: 10 s
    try:
        job = client.submit(PROMPT, 100, api_name="/kv_cache")
        deadline = time.monotonic() + 30
        while len(calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls, "the run did not start"
        job.cancel()
        deadline = time.monotonic() + 5
        while running_jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_jobs, "the run kept going after cancel"
        assert len(calls) < 150
    finally:
        hook.remove()


def test_closing_a_run_stops_its_job(generator):
    """What Gradio does on a cancel or when the visitor leaves: it closes the handler's stream."""
    hook = generator.model.register_forward_pre_hook(lambda *args: time.sleep(0.05))  # 2 x 100 tokens: 10 s
    try:
        stream = run_job(lambda job: kv_cache(generator, PROMPT, 100, job), "someone", "kv-cache", None)
        assert next(stream) is None  # the run goes on in its thread; the stream ticks meanwhile
        assert running_jobs
        stream.close()
        deadline = time.monotonic() + 3
        while running_jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_jobs, "the run kept going after its stream was closed"
    finally:
        hook.remove()


@pytest.mark.parametrize("api_name", ["kv_cache", "sparse_attention", "quantize"])
def test_each_endpoint_describes_its_inputs_and_output_for_http_and_mcp(hub_url, store, api_name):
    info = requests.get(f"{hub_url}gradio_api/info", timeout=30).json()["named_endpoints"][f"/{api_name}"]
    assert info["description"].startswith(("GPT-2", "The text's perplexity"))
    assert info["parameters"][0]["parameter_name"] == "text" and not info["parameters"][0]["parameter_has_default"]
    assert all(p["parameter_has_default"] for p in info["parameters"][1:])  # predict(text, api_name=...) works
    with gr.Blocks() as app:  # the functions Gradio calls, as --mcp serves them
        register_api(store)
    function = next(fn.fn for fn in app.fns.values() if fn.api_name == api_name)
    description, parameters, returns = get_function_description(function)
    parameters.pop("request")  # Gradio's, not the caller's
    assert len(description) > 40 and all(len(text) > 15 for text in parameters.values()), parameters
    assert returns and returns[0].startswith("{")  # the JSON answer, key by key


# --- In a browser ------------------------------------------------------------------------------------------


def test_browser_a_link_opens_the_tab_and_the_kv_view_says_the_texts_match(page, hub_url):
    page.goto(f"{hub_url}?tab=efficient-attention&text=the%20cat%20sat&new_tokens=6&window=4&pattern=strided")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.locator("#efficient-text textarea").input_value() == "the cat sat"
    page.locator("#efficient-kv-run").click()
    page.locator("#efficient-kv-figure img").wait_for()
    summary = page.locator("#efficient-kv-summary").inner_text()
    assert "6 new tokens" in summary and "%" in summary
    assert "identical" in summary or "differ" in summary
