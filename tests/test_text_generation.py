"""Text generation: the core against transformers' own `generate`, then the /generate endpoint and the tab."""

import math
import re
import threading
import time

import pytest
import torch
from gradio_client.exceptions import AppError
from playwright.sync_api import expect
from transformers import AutoModelForCausalLM, AutoTokenizer, TopKLogitsWarper, TopPLogitsWarper

from demos.language.text_generation import (
    GenerationSettings,
    TopPAfterTopK,
    check_settings,
    configured_context,
    fit_prompt,
    generate_stream,
    load_text_generator,
    most_new_tokens,
    run_summary,
    running_generations,
    token_probabilities,
)
from demos.language.text_generation_tab import EXAMPLES
from hub.errors import HubError
from hub.jobs import Job

PROMPT = "The cat sat on the mat while"


@pytest.fixture(scope="module")
def gpt2_dir(tiny_model_dir):
    return tiny_model_dir("text-generation")


@pytest.fixture(scope="module")
def generator(gpt2_dir):
    return load_text_generator(str(gpt2_dir))


def last(stream):
    *_, final = stream
    return final


def test_greedy_output_equals_model_generate(generator, gpt2_dir):
    ours = last(generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=30, decoding="greedy")))

    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(gpt2_dir)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=30, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    expected_ids = output[0, inputs.input_ids.shape[1] :].tolist()

    assert ours.new_ids == expected_ids
    assert ours.text == tokenizer.decode(expected_ids, skip_special_tokens=True)


def test_same_seed_same_text_and_another_seed_another_text(generator):
    settings = GenerationSettings(max_new_tokens=40, temperature=1.5, top_k=0, top_p=1.0, seed=7)
    first = last(generate_stream(generator, PROMPT, settings))
    again = last(generate_stream(generator, PROMPT, settings))
    other = last(generate_stream(generator, PROMPT, GenerationSettings(**{**settings.__dict__, "seed": 8})))
    assert first.new_ids == again.new_ids
    assert first.new_ids != other.new_ids


def test_stream_yields_growing_text(generator):
    texts = [
        g.text for g in generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=60), update_every_s=0.001)
    ]
    assert len(texts) > 1
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))


def test_long_prompt_is_cut_from_the_left_to_fit_the_context(generator):
    long_prompt = " ".join(["one two three four five six seven eight nine ten"] * 60)
    fitted = fit_prompt(generator, long_prompt, max_new_tokens=50)
    assert fitted.cut_tokens > 0
    assert fitted.input_ids.shape[1] + 50 == generator.context
    full = generator.tokenizer(long_prompt, return_tensors="pt").input_ids
    assert torch.equal(fitted.input_ids[0], full[0, -fitted.input_ids.shape[1] :])  # the end of the prompt is kept

    result = last(generate_stream(generator, long_prompt, GenerationSettings(max_new_tokens=50, decoding="greedy")))
    assert result.cut_tokens == fitted.cut_tokens and len(result.new_ids) == 50


def test_closing_the_stream_stops_the_generation_thread(generator):
    hook = generator.model.register_forward_pre_hook(lambda *args: time.sleep(0.02))  # a slow model
    try:
        stop = threading.Event()
        stream = generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=200), stop, update_every_s=0.001)
        assert next(stream).new_ids == []  # the stream starts with the empty continuation, before generate runs
        first = next(stream)
        stream.close()  # what Gradio does when the visitor presses Stop or leaves
        assert stop.is_set()
        assert len(first.new_ids) < 200
        deadline = time.monotonic() + 2  # closing does not wait: the thread ends after its token
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(t.name == "generate" and t.is_alive() for t in threading.enumerate())
    finally:
        hook.remove()


def test_a_stopped_generation_says_after_how_many_tokens(generator):
    stop, forwards = threading.Event(), []

    def press_stop_during_the_fifth_token(*args):
        forwards.append(1)
        if len(forwards) == 5:  # the forward pass that makes the fifth token (the first one reads the prompt)
            stop.set()

    hook = generator.model.register_forward_pre_hook(press_stop_during_the_fifth_token)
    try:
        stopped = last(
            generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=40, decoding="greedy"), stop)
        )
    finally:
        hook.remove()
    full = last(generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=40, decoding="greedy")))
    assert stopped.stopped == "stop" and stopped.new_ids == full.new_ids[:5]  # the text so far, exactly
    assert run_summary(stopped) == "Stopped after 5 of 40 tokens."
    assert full.stopped is None and run_summary(full).startswith("40 new tokens in ")


def test_the_time_limit_stops_a_generation_and_says_so(generator):
    hook = generator.model.register_forward_pre_hook(lambda *args: time.sleep(0.05))
    try:
        job = Job(time_limit_s=0.5)
        stopped = last(generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=200), job=job))
    finally:
        hook.remove()
    assert stopped.stopped == "time limit" and 0 < len(stopped.new_ids) < 200
    assert run_summary(stopped).startswith(f"Stopped after {len(stopped.new_ids)} of 200 tokens: the time limit")
    assert stopped.text == generator.tokenizer.decode(stopped.new_ids, skip_special_tokens=True)


def test_token_probabilities_are_the_models_softmax(generator):
    settings = GenerationSettings(max_new_tokens=10, decoding="greedy")
    generation = last(generate_stream(generator, PROMPT, settings))
    scored = token_probabilities(generator, generation, settings)

    ids = torch.tensor([generation.prompt_ids + generation.new_ids])
    with torch.no_grad():
        probs = generator.model(ids).logits[0].softmax(-1)
    start = len(generation.prompt_ids)
    expected = [float(probs[start + i - 1, token]) for i, token in enumerate(generation.new_ids)]
    assert scored.probabilities == pytest.approx(expected, rel=1e-4)
    # Greedy picks the top token, so it heads every alternatives table, marked as chosen.
    assert all(table["chosen"].iloc[0] == "<-" for table in scored.alternatives)


def test_sampling_view_applies_top_k(generator):
    settings = GenerationSettings(max_new_tokens=5, top_k=3, top_p=1.0, seed=1)
    generation = last(generate_stream(generator, PROMPT, settings))
    table = token_probabilities(generator, generation, settings, top=10).alternatives[0]
    assert (table["after sampling settings %"] > 0).sum() <= 3
    assert table["after sampling settings %"].sum() == pytest.approx(100.0, abs=0.1)


@pytest.mark.parametrize("top_k", [1, 5, 50, 0])
def test_top_p_after_top_k_equals_the_librarys_top_p(top_k):
    """The faster top-p keeps exactly the tokens transformers' keeps, ties included: scores rounded to bfloat16
    (many equal scores, some where the cut falls), a vocabulary of GPT-2's size, and no top-k at all."""
    torch.manual_seed(0)
    ids, cuts_in_ties = torch.zeros(1, 3, dtype=torch.long), 0
    for n in range(300):
        scores = torch.randn(1, 50257 if n % 10 == 0 else 997).mul(3).to(torch.bfloat16).float()
        if top_k:
            scores = TopKLogitsWarper(top_k)(ids, scores)
        for top_p in (0.05, 0.5, 0.9, 0.95):
            expected = TopPLogitsWarper(top_p)(ids, scores.clone())
            assert torch.equal(TopPAfterTopK(top_p)(ids, scores.clone()), expected)
            kept = expected[expected > -math.inf]
            cuts_in_ties += bool((scores == kept.min()).sum() > (expected == kept.min()).sum())
    assert top_k in (1, 0) or cuts_in_ties > 0  # the cut did fall inside groups of equal scores


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": math.nan},
        {"temperature": 0.0},
        {"top_p": math.inf},
        {"max_new_tokens": -1},
        {"max_new_tokens": 2.5},
        {"top_k": "many"},
        {"decoding": "beam"},
        {"seed": -3},
    ],
)
def test_bad_settings_are_refused_with_a_message(bad):
    with pytest.raises(HubError, match=r"must be"):
        check_settings(**bad)


def test_emoji_and_control_characters_are_fine(generator):
    result = last(generate_stream(generator, "Bonjour \u0007 \U0001f600\tworld", GenerationSettings(max_new_tokens=8)))
    assert len(result.new_ids) == 8


def test_empty_and_huge_prompts_are_refused(generator):
    with pytest.raises(HubError, match="empty"):
        next(generate_stream(generator, "   \n "))
    with pytest.raises(HubError, match="too long"):
        next(generate_stream(generator, "x" * 1_000_000))
    with pytest.raises(HubError, match="context"):
        next(generate_stream(generator, PROMPT, GenerationSettings(max_new_tokens=generator.context)))


# --- a prompt reaches the model exactly as typed --------------------------------------------------------------


def bare_next_token(folder, text: str) -> torch.Tensor:
    """GPT-2's next-token distribution after exactly `text`, with transformers alone."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0, -1].softmax(-1)


@pytest.mark.parametrize("ending", [" ", "\n", "\n\n"])
def test_a_trailing_space_or_newline_reaches_the_model(generator, gpt2_dir, ending):
    prompt = PROMPT + ending
    expected = bare_next_token(gpt2_dir, prompt)
    assert not torch.allclose(expected, bare_next_token(gpt2_dir, PROMPT), atol=1e-3)  # the ending matters

    settings = GenerationSettings(max_new_tokens=1, decoding="greedy")
    generation = last(generate_stream(generator, prompt, settings))
    assert generation.prompt_ids == generator.tokenizer(prompt).input_ids
    scored = token_probabilities(generator, generation, settings, top=5)
    assert generation.new_ids == [int(expected.argmax())]
    assert scored.probabilities[0] == pytest.approx(float(expected.max()), rel=1e-4)
    top = expected.topk(5)
    table = scored.alternatives[0]
    assert list(table["token"]) == [repr(generator.tokenizer.decode([i])) for i in top.indices.tolist()]
    assert list(table["model probability %"]) == pytest.approx([100 * p for p in top.values.tolist()], abs=0.01)


def test_the_slider_offers_what_the_model_accepts(generator, gpt2_dir):
    assert configured_context(str(gpt2_dir)) == generator.context == 256
    assert configured_context("/no/such/model") is None
    most = most_new_tokens(generator.context)
    assert most == 255
    assert fit_prompt(generator, "Hi", most).input_ids.shape[1] == 1
    with pytest.raises(HubError, match="context"):
        fit_prompt(generator, "Hi", most + 1)
    assert most_new_tokens(1024) == 512  # GPT-2: the hub's own limit, which the endpoint holds callers to


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_generate_with_defaults_returns_text(client):
    text = client.predict("Once upon a time", api_name="/generate")
    assert isinstance(text, str) and text


def test_api_greedy_equals_the_core(client, store):
    text = client.predict(PROMPT, 20, "greedy", api_name="/generate")
    expected = last(generate_stream(store.get("text-generation"), PROMPT, check_settings(20, "greedy")))
    assert text == expected.text


@pytest.mark.parametrize("ending", [" ", "\n"])
def test_api_prompt_with_a_trailing_space_or_newline_equals_the_bare_model(client, gpt2_dir, ending):
    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(gpt2_dir)

    def bare_greedy(text: str) -> str:
        inputs = tokenizer(text, return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)

    expected = bare_greedy(PROMPT + ending)
    assert expected != bare_greedy(PROMPT)  # the ending changes the continuation: a stripped prompt would fail here
    assert client.predict(PROMPT + ending, 12, "greedy", api_name="/generate") == expected


def test_api_streams_partial_text(client, store):
    hook = store.get("text-generation").model.register_forward_pre_hook(lambda *args: time.sleep(0.01))
    try:
        job = client.submit(PROMPT, 100, api_name="/generate")
        partials = list(job)
    finally:
        hook.remove()
    assert len(partials) > 2
    assert all(later.startswith(earlier) for earlier, later in zip(partials, partials[1:]))
    assert partials[-1] == job.result()


@pytest.mark.parametrize("reads_the_stream", [True, False])
def test_api_cancel_stops_the_generation_thread(client, store, reads_the_stream):
    """A caller who reads the streamed text and one who only waits for the end are stopped alike."""
    model = store.get("text-generation").model
    calls = []
    hook = model.register_forward_pre_hook(lambda *args: calls.append(time.sleep(0.05)))  # 200 tokens take 10 s
    try:
        job = client.submit(PROMPT, 200, api_name="/generate")
        deadline = time.monotonic() + 30
        if reads_the_stream:
            while not job.outputs() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.outputs(), "no streamed output arrived"
        else:
            while len(calls) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
        job.cancel()
        deadline = time.monotonic() + 5
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_generations, "the generation thread kept running after cancel"
    finally:
        hook.remove()


def test_api_cancel_that_comes_while_the_model_loads_stops_the_generation(client, store, monkeypatch):
    """Gradio can close a handler only once it has yielded: the handler yields before loading the model, so a
    cancel that comes during the load still ends the generation (within a token of its start)."""
    get = store.get

    def slow_first_use(demo_id, *args, **kwargs):
        if demo_id == "text-generation":
            time.sleep(1.0)  # the model is loading
        return get(demo_id, *args, **kwargs)

    monkeypatch.setattr(store, "get", slow_first_use)
    forwards = []
    hook = get("text-generation").model.register_forward_pre_hook(lambda *args: forwards.append(time.sleep(0.05)))
    try:
        job = client.submit(PROMPT, 200, api_name="/generate")  # 200 tokens would take 10 s
        time.sleep(0.5)
        job.cancel()
        deadline = time.monotonic() + 6
        while (running_generations or len(forwards) == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_generations, "the generation went on after a cancel that came while the model loaded"
        assert len(forwards) < 20
    finally:
        hook.remove()


def test_generate_is_described_for_api_and_mcp_clients(store, hub_url):
    """/gradio_api/info and Gradio's MCP server read the handler's docstring: each parameter with its range."""
    import gradio as gr
    import httpx
    from gradio.utils import get_function_description

    from demos.language.text_generation_tab import text_generation_tab

    with gr.Blocks() as blocks:
        text_generation_tab(store)
    handler = next(fn for fn in blocks.fns.values() if fn.api_name == "generate").fn
    description, parameters, returns = get_function_description(handler)
    names = ["prompt", "max_new_tokens", "decoding", "temperature", "top_k", "top_p", "repetition_penalty", "seed"]
    assert all(parameters[name] for name in names)
    assert "512" in parameters["max_new_tokens"] and "greedy" in parameters["decoding"] and returns
    info = httpx.get(f"{hub_url}gradio_api/info").json()["named_endpoints"]["/generate"]
    assert info["description"] == description.strip() and "GPT-2" in description


@pytest.mark.parametrize(
    "args, message",
    [
        (("",), "empty"),
        (("x" * 1_000_000,), "too long"),
        ((PROMPT, 50, "sampling", -1.0), "Temperature|minimum"),  # NaN cannot travel as JSON: see the core test
        ((PROMPT, 100_000), "Max new tokens|maximum"),
        ((PROMPT, 50, "beam"), "Decoding|choices|beam"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")
    assert client.predict("Hello", 5, "greedy", api_name="/generate")


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_generates_and_shows_token_probabilities(page, hub_url):
    page.goto(f"{hub_url}?tab=text-generation")
    page.get_by_role("button", name="Generate").click()
    tokens = page.locator("#generation-tokens .score-token")
    tokens.first.wait_for()
    assert page.locator("#generation-output textarea").input_value()
    table = page.locator("#generation-alternatives")
    page.wait_for_function("el => el.innerText.includes('<-')", arg=table.element_handle())
    first_table = table.inner_text()
    tokens.nth(3).click()  # that token's top alternatives replace the first token's
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[table.element_handle(), first_table])


def test_browser_stop_keeps_the_text_and_says_after_how_many_tokens(page, hub_url, store):
    hook = store.get("text-generation").model.register_forward_pre_hook(lambda *args: time.sleep(0.05))
    try:
        page.goto(f"{hub_url}?tab=text-generation")
        page.get_by_role("button", name="Generate").click()
        output = page.locator("#generation-output textarea")
        page.wait_for_function("el => el.value.length > 0", arg=output.element_handle())  # text is streaming
        stop = page.get_by_role("button", name="Stop")
        stop.scroll_into_view_if_needed()
        stop.click()
        status = page.locator("#generation-status")
        stopped = re.compile(r"^\s*Stopped after (\d+) of 50 tokens\.\s*$")  # and no progress timer
        expect(status).to_have_text(stopped, timeout=20_000)
        made = int(stopped.search(status.text_content()).group(1))
        assert 0 < made < 50
        assert output.input_value()  # the text so far stays
        expect(page.locator("#generation-tokens .score-token")).to_have_count(made)  # the stopped run's tokens
        expect(status).to_have_text(f"Stopped after {made} of 50 tokens.")
    finally:
        hook.remove()


def test_browser_clicking_an_example_generates_from_it(page, hub_url, store):
    example = EXAMPLES[2][0]
    expected = last(generate_stream(store.get("text-generation"), example, check_settings())).text
    page.goto(f"{hub_url}?tab=text-generation")
    cell = page.get_by_text(example, exact=True)
    cell.scroll_into_view_if_needed()
    cell.click()
    expect(page.locator("#generation-prompt textarea")).to_have_value(example)
    expect(page.locator("#generation-output textarea")).to_have_value(expected, timeout=60_000)
    expect(page.locator("#generation-status")).to_contain_text("tokens in", timeout=60_000)


def test_browser_slider_stops_at_the_models_context(page, hub_url):
    page.goto(f"{hub_url}?tab=text-generation")
    slider = page.get_by_label("Max new tokens").last  # the range input (the number box shares its label)
    slider.wait_for()
    page.wait_for_function("el => el.max === '255'", arg=slider.element_handle())  # the tiny GPT-2 reads 256


def test_a_client_that_disconnects_stops_the_generation_thread(hub_url, store):
    import httpx

    config = httpx.get(f"{hub_url}config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
    hook = store.get("text-generation").model.register_forward_pre_hook(lambda *args: time.sleep(0.05))
    try:
        session = "disconnecting-visitor"
        body = {"data": [PROMPT, 200, "sampling", 0.8, 50, 0.95, 1.0, 0], "fn_index": fn_index, "session_hash": session}
        httpx.post(f"{hub_url}gradio_api/queue/join", json=body).raise_for_status()
        with httpx.stream("GET", f"{hub_url}gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if "process_generating" in line:
                    break  # text is streaming: now the visitor closes the tab
        deadline = time.monotonic() + 4
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_generations, "the generation thread kept running after the client left"
    finally:
        hook.remove()
