"""Before transformers: the task, the three models (sizes, receptive field, steps), the race against an independent
re-evaluation of models the test trains itself, the Code accordion's script, then /sequence_race over HTTP: its
result, bad input, and a cancel that really stops the training. Small settings keep it to a few seconds."""

import math
import time

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from demos.before_transformers import (
    CHANCE,
    KINDS,
    Stopped,
    build_model,
    cnn_receptive_field,
    longest_path,
    make_batch,
    one_torch_thread,
    parameter_count,
    race_lengths,
    reproduce_code,
    sequence_race,
    sequential_steps,
    training_losses,
)
from demos.before_transformers.figures import accuracy_figure, cost_figure
from demos.before_transformers.models import ATTENTION_LAYERS, CNN_KERNEL, CNN_LAYERS
from demos.before_transformers.tab import summary
from demos.before_transformers.task import SYMBOLS
from hub.errors import HubError
from hub.jobs import running_jobs

from .rest import error_message, rest_call

SMALL = {"length_max": 16, "seed": 3, "steps": 30}  # a race of about a second


@pytest.fixture(scope="module")
def small_race() -> dict:
    return sequence_race(**SMALL)


# --- the task and the models ------------------------------------------------------------------------------------


def test_the_answer_is_the_symbol_at_the_position_the_question_names():
    tokens, answers = make_batch(torch.Generator().manual_seed(1), length=20, size=50)
    assert tokens.shape == (50, 20)
    for row, answer in zip(tokens.tolist(), answers.tolist()):
        asked = row[-1] - SYMBOLS  # the last token is the question "what was symbol number i?"
        assert 0 <= asked < 10  # always about the first half
        assert row[asked] == answer and all(0 <= symbol < SYMBOLS for symbol in row[:-1])


def test_the_three_models_are_within_ten_percent_of_each_others_size():
    counts = {kind: parameter_count(build_model(kind, 0)) for kind in KINDS}
    by_hand = sum(p.numel() for p in torch.nn.LSTM(48, 76).parameters())
    assert by_hand == 4 * (48 * 76 + 76 * 76 + 2 * 76)  # the formula the docs give for an LSTM's weights
    assert max(counts.values()) <= 1.1 * min(counts.values()), counts


def test_the_cnns_receptive_field_is_what_a_gradient_probe_finds():
    """Which input positions move the CNN's answer at all: the gradient of its output with respect to each
    position's embedding is non-zero exactly for the last 1 + layers x (kernel - 1) positions."""
    model = build_model("cnn", 0)
    tokens, _ = make_batch(torch.Generator().manual_seed(0), 40, 1)
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["embeddings"] = output

    model.embed.register_forward_hook(keep)
    model(tokens).sum().backward()
    reached = captured["embeddings"].grad[0].abs().sum(-1) > 0
    seen = torch.nonzero(reached).flatten().tolist()
    assert seen == list(range(40 - cnn_receptive_field(), 40))
    assert cnn_receptive_field() == 1 + CNN_LAYERS * (CNN_KERNEL - 1)


def test_sequential_steps_and_the_longest_path():
    assert [sequential_steps("rnn", n) for n in (8, 64)] == [8, 64]  # one per token
    assert [sequential_steps("cnn", n) for n in (8, 64)] == [CNN_LAYERS] * 2  # one per layer
    assert [sequential_steps("attention", n) for n in (8, 64)] == [ATTENTION_LAYERS] * 2
    assert longest_path("rnn", 64) == 63 and longest_path("attention", 64) == 1
    assert longest_path("cnn", 64) == math.ceil(63 / (CNN_KERNEL - 1))


def test_the_lengths_are_evenly_spaced_up_to_the_longest():
    assert race_lengths(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert race_lengths(128)[-1] == 128 and race_lengths(8) == [4, 5, 6, 7, 8]


# --- the race ---------------------------------------------------------------------------------------------------


def test_the_race_returns_what_the_api_promises(small_race):
    r = small_race
    assert r["lengths"] == race_lengths(16) and r["chance"] == CHANCE == 1 / 8
    assert set(r["models"]) == {"rnn", "cnn", "attention"}
    for kind, model in r["models"].items():
        assert model["parameters"] == parameter_count(build_model(kind, 0))
        assert len(model["accuracy"]) == len(model["ms_per_sequence"]) == len(r["lengths"])
        assert all(0 <= a <= 1 for a in model["accuracy"]) and all(ms > 0 for ms in model["ms_per_sequence"])
        assert model["sequential_steps"] == [sequential_steps(kind, n) for n in r["lengths"]]
    assert r["cnn_receptive_field"] == cnn_receptive_field()


def test_the_same_seed_gives_the_same_accuracies(small_race):
    again = sequence_race(**SMALL)
    other = sequence_race(**{**SMALL, "seed": 4})
    for kind in KINDS:
        assert again["models"][kind]["accuracy"] == small_race["models"][kind]["accuracy"]
    assert any(other["models"][k]["accuracy"] != small_race["models"][k]["accuracy"] for k in KINDS)


def test_the_accuracies_equal_an_independent_evaluation_of_models_trained_the_same_way(small_race):
    """Train each model here with the public functions and the same seed, then score fresh sequences one at a
    time from the same held-out stream: the race's accuracies are these counts."""
    seed, lengths = SMALL["seed"], small_race["lengths"]
    for kind in KINDS:
        model = build_model(kind, seed)
        with one_torch_thread():  # as the race trains: the same sums in the same order
            losses = list(training_losses(model, seed, SMALL["steps"], lengths))
        assert len(losses) == SMALL["steps"] and losses[-1] < losses[0] + 1
        held_out = torch.Generator().manual_seed(seed + 2**32)
        for length, reported in zip(lengths, small_race["models"][kind]["accuracy"]):
            tokens, answers = make_batch(held_out, length, 512)
            with torch.no_grad(), one_torch_thread():
                right = sum(
                    (model(tokens[i : i + 32]).argmax(-1) == answers[i : i + 32]).sum().item()
                    for i in range(0, 512, 32)
                )
            assert reported == pytest.approx(right / 512, abs=1.5 / 512), (kind, length)


def test_a_stopped_race_raises_stopped_between_two_steps():
    calls = []

    def stop_after_ten() -> bool:
        calls.append(1)
        return len(calls) > 10

    with pytest.raises(Stopped, match="rnn at step 11"):
        sequence_race(16, 0, 500, should_stop=stop_after_ten)


@pytest.mark.parametrize(
    "args, message",
    [
        ((4,), "Longest length must be between 8 and 128"),
        ((129,), "Longest length must be between 8 and 128"),
        ((float("nan"),), "Longest length must be between"),
        (("64",), "Longest length must be a number"),
        ((64, -1), "Seed must be between 0 and"),
        ((64, 1.5), "Seed must be a whole number"),
        ((64, 0, 5), "Training steps must be between 10 and 1000"),
        ((64, 0, True), "Training steps must be a number"),
        ((128, 0, 1000), "Training steps x Longest length is at most"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_the_input(args, message):
    with pytest.raises(HubError, match=message):
        sequence_race(*args)


def test_the_code_shown_reproduces_the_accuracies(small_race, capsys):
    namespace = {}
    threads = torch.get_num_threads()
    try:
        exec(reproduce_code(**SMALL), namespace)
    finally:
        torch.set_num_threads(
            threads
        )  # the script sets one thread, as a plain script would; the tests after it keep theirs
    for kind in KINDS:
        assert namespace["accuracy"][kind] == small_race["models"][kind]["accuracy"]
    assert "attention 47" in capsys.readouterr().out  # its parameter count, printed


def test_the_figures_and_the_summary_are_drawn_from_the_result(small_race):
    assert accuracy_figure(small_race).width > 700 and cost_figure(small_race).width > 1000
    text = summary(small_race)
    attention_last = small_race["models"]["attention"]["accuracy"][-1]
    assert f"attention {attention_last:.0%}" in text and "Parameters:" in text


# --- through the HTTP API ---------------------------------------------------------------------------------------


def test_api_sequence_race_returns_the_races_numbers(client, small_race):
    got = client.predict(SMALL["length_max"], SMALL["seed"], SMALL["steps"], api_name="/sequence_race")
    assert got["lengths"] == small_race["lengths"] and got["cnn_receptive_field"] == cnn_receptive_field()
    for kind in KINDS:
        assert got["models"][kind]["accuracy"] == small_race["models"][kind]["accuracy"]
        assert got["models"][kind]["parameters"] == small_race["models"][kind]["parameters"]


@pytest.mark.parametrize(
    "data, message",
    [
        ([float("nan"), 0, 20], "Longest length must be a finite number"),
        ([64, "zero", 20], "Seed must be a number"),
        # a slider's bounds are checked before the handler runs, in words that name the input
        ([64, 0, 100000], "Training steps must be between 10 and 1000, got 100000"),
        ([200, 0, 20], "Longest length must be between 8 and 128, got 200"),
        ([64, -5, 20], "Seed must be between 0 and"),
        ([128, 0, 1000], "Training steps x Longest length"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(hub_url, client, data, message):
    assert message in error_message(rest_call(hub_url, "sequence_race", data))
    assert client.predict(8, 0, 10, api_name="/sequence_race")["lengths"] == race_lengths(8)


def test_api_a_refused_request_reaches_the_client_as_its_message(client):
    with pytest.raises(AppError, match="Training steps x Longest length is at most 96,000"):
        client.predict(128, 0, 1000, api_name="/sequence_race")


def race_threads() -> list:
    return [thread for thread in running_jobs if thread.name == "sequence-race"]


def test_api_cancel_really_stops_the_race(hub_url):
    client = Client(hub_url, verbose=False)
    job = client.submit(128, 0, 700, api_name="/sequence_race")  # minutes of training
    deadline = time.monotonic() + 60
    while not race_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert race_threads(), "the race never started"
    time.sleep(0.5)
    job.cancel()
    deadline = time.monotonic() + 10
    while race_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not race_threads(), "the race kept training after Cancel"


# --- in a real browser ----------------------------------------------------------------------------------------


def test_browser_a_linked_small_race_trains_and_draws_its_figures_and_code(page, hub_url):
    page.goto(f"{hub_url}?tab=before-transformers&length_max=16&steps=20&seed=2")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.get_by_label("number input for Training steps").input_value() == "20"
    page.locator("#bt-run").click()
    page.locator("#bt-accuracy img").wait_for()
    page.locator("#bt-cost img").wait_for()
    page.locator("#bt-summary").get_by_text("At 16 tokens").wait_for()
    assert "Parameters:" in page.locator("#bt-summary").inner_text()
    page.get_by_text("Code: reproduce this with the library").locator("visible=true").click()  # this tab's
    page.get_by_text("SYMBOLS = 8").locator("visible=true").first.wait_for()  # the script, from its top
