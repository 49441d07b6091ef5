"""Scaling laws: the corpus, the parameter counts against the models' own, the fit against an independent least-squares
fit, a live run against a training written out here with the same seed, the grid script and its JSON, the Code
accordion run as shown, then /scaling_law over HTTP (bad input, cancel)."""

import contextlib
import io
import json
import math
import re
import threading
import time

import numpy as np
import pytest
import torch
from gradio_client import Client
from scipy.optimize import least_squares
from transformers import GPT2Config, GPT2LMHeadModel

from bench import scaling_grid
from demos.scaling_laws.code import reproduce_code
from demos.scaling_laws.corpus import VERSE_NUMBER, chapters, load_corpus, split
from demos.scaling_laws.figures import exponents_table, law_figure, points_table
from demos.scaling_laws.grid import BUDGETS, GRID_PATH, load_grid
from demos.scaling_laws.law import joint_law, size_law
from demos.scaling_laws.live import check_live, scaling_law
from demos.scaling_laws.training import (
    GRID_SIZES,
    SETTINGS,
    SIZES,
    SIZES_BY_NAME,
    build_model,
    non_embedding_parameters,
    train,
)
from hub.errors import HubError
from hub.jobs import running_jobs
from tests.rest import error_message, rest_call

TINY_RUN = ("1 x 12", 2_048, 7)  # two steps of the smallest model


def last(results):
    *_, final = results
    return final


@pytest.fixture(scope="module")
def grid_answer() -> dict:
    return next(scaling_law())


@pytest.fixture(scope="module")
def tiny_live() -> dict:
    return last(scaling_law(*TINY_RUN))["live"]


# --- the corpus ---------------------------------------------------------------------------------------------------


def test_the_corpus_is_over_a_megabyte_of_english_with_every_tenth_chapter_held_out():
    corpus = load_corpus()
    assert len(corpus.train) + len(corpus.validation) > 4_000_000  # bytes
    assert corpus.chapters == 1189  # the Bible's chapters
    text = chapters()
    assert text[0].startswith("The First Book of Moses, called Genesis\nIn the beginning God created")
    assert not any(VERSE_NUMBER.search(chapter) for chapter in text)
    train_text, held_out = split(text)
    assert text[9] in held_out and text[9] not in train_text  # chapter 10 of Genesis is held out
    assert text[10] in train_text and text[10] not in held_out
    assert len(corpus.validation) == pytest.approx(0.1 * (len(corpus.train) + len(corpus.validation)), rel=0.1)
    assert bytes(corpus.train[:9].tolist()).decode() == "The First"


# --- the sizes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
def test_non_embedding_parameters_equal_the_models_own_count(size):
    model = build_model(size)
    by_name = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[1] not in ("wte", "wpe"))
    assert non_embedding_parameters(model) == model.num_parameters(exclude_embeddings=True) == by_name
    # 12 d^2 per block (attention 4 d^2, MLP 8 d^2) plus biases and norms
    d, layers = size.width, size.layers
    assert non_embedding_parameters(model) == layers * (12 * d * d + 13 * d) + 2 * d


def test_the_grid_spans_five_sizes_over_two_orders_of_magnitude_and_its_counts_are_the_models():
    grid = load_grid()
    counts = [s["parameters"] for s in grid["sizes"]]
    assert len(counts) >= 5 and max(counts) / min(counts) >= 100
    assert counts == [non_embedding_parameters(build_model(size)) for size in GRID_SIZES]
    assert {p["parameters"] for p in grid["points"]} == set(counts)


# --- the grid's JSON and the script that writes it ---------------------------------------------------------------


def test_the_shipped_grid_says_how_it_was_computed_and_holds_every_size_at_every_budget():
    grid = json.loads(GRID_PATH.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", grid["commit"])
    assert grid["cpu"] and grid["dtype"] == "float32" and grid["threads"] >= 1 and grid["seconds"] > 0
    assert grid["budgets"] == list(BUDGETS)
    assert grid["settings"] == SETTINGS.__dict__
    assert len(grid["points"]) == len(grid["sizes"]) * len(grid["budgets"])
    for point in grid["points"]:
        assert set(point) == {"parameters", "tokens", "loss"}
        assert isinstance(point["parameters"], int) and isinstance(point["tokens"], int)
        assert isinstance(point["loss"], float) and 0 < point["loss"] < math.log(256)
    by_tokens = {p["tokens"]: p["loss"] for p in grid["points"] if p["parameters"] == grid["sizes"][-1]["parameters"]}
    assert by_tokens[max(BUDGETS)] < by_tokens[min(BUDGETS)]  # more text, lower loss


def test_the_grid_script_writes_points_that_a_training_run_reproduces(tmp_path):
    out = tmp_path / "grid.json"
    # The script's own thread count would change this whole test process: keep the one it has.
    written = scaling_grid.main(["--tiny", "--out", str(out), "--threads", str(torch.get_num_threads())])
    assert json.loads(out.read_text()) == written
    assert written["dtype"] == "float32" and written["seconds"] > 0 and written["cpu"]
    assert len(written["points"]) == 4
    for size in scaling_grid.TINY_SIZES:
        run = train(size, max(scaling_grid.TINY_BUDGETS), list(scaling_grid.TINY_BUDGETS))
        points = [(p["tokens"], p["loss"]) for p in written["points"] if p["parameters"] == run.parameters]
        assert points == [(tokens, round(loss, 6)) for tokens, loss in run.checkpoints]


# --- the fit ------------------------------------------------------------------------------------------------------


def refit(function, x, losses, start, low, high):
    """An independent least-squares fit: scipy's least_squares on the residuals, from another starting point."""
    answer = least_squares(lambda p: function(x, *p) - losses, start, bounds=(low, high), x_scale="jac")
    return answer.x, float(np.sum(answer.fun**2))


def test_the_joint_fit_is_the_least_squares_fit_of_all_the_points(grid_answer):
    points, fit = grid_answer["points"], grid_answer["fit"]
    n, d, losses = (np.array([p[key] for p in points], dtype=float) for key in ("parameters", "tokens", "loss"))
    values, best = refit(joint_law, (n, d), losses, [2.0, 5.0, 0.2, 50.0, 0.4], [0] * 5, [10, 1e7, 3, 1e7, 3])
    ours = [fit[k] for k in ("E", "A", "alpha", "B", "beta")]
    assert np.sum((joint_law((n, d), *ours) - losses) ** 2) == pytest.approx(best, rel=1e-4)
    assert np.allclose(joint_law((n, d), *ours), joint_law((n, d), *values), atol=2e-3)
    assert fit["alpha"] == pytest.approx(values[2], rel=0.05)
    assert fit["rmse"] == pytest.approx(math.sqrt(best / len(points)), rel=1e-3)


def test_the_size_law_is_the_least_squares_fit_of_the_largest_budgets_points(grid_answer):
    fit = grid_answer["fit_size"]
    chosen = [p for p in grid_answer["points"] if p["tokens"] == max(BUDGETS)]
    assert fit["tokens"] == max(BUDGETS) and len(chosen) == len(GRID_SIZES)
    n, losses = (np.array([p[key] for p in chosen], dtype=float) for key in ("parameters", "loss"))
    values, best = refit(size_law, n, losses, [0.5, 20.0, 0.2], [0, 0, 0], [10, 1e7, 3])
    ours = [fit["E"], fit["A"], fit["alpha"]]
    assert np.sum((size_law(n, *ours) - losses) ** 2) == pytest.approx(best, rel=1e-3, abs=1e-9)
    assert np.allclose(size_law(n, *ours), size_law(n, *values), atol=2e-3)


def test_the_exponents_table_sets_the_fit_beside_kaplan_and_chinchilla(grid_answer):
    table = exponents_table(grid_answer)
    assert table.iloc[0, 1] == f"{grid_answer['fit']['alpha']:.3f}"
    assert table.iloc[2, 1] == "0.076" and table.iloc[3, 1] == "0.34" and table.iloc[3, 2] == "0.28"
    rows = points_table(grid_answer)
    assert len(rows) == len(grid_answer["points"])


# --- the live run -------------------------------------------------------------------------------------------------


def independent_training(size_name: str, tokens: int, seed: int) -> float:
    """The run written out with torch and transformers alone, from the corpus's bytes."""
    size, corpus, s = SIZES_BY_NAME[size_name], load_corpus(), SETTINGS
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=256, n_positions=s.context, n_embd=size.width, n_layer=size.layers, n_head=size.heads,
                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / s.warmup_steps))
    generator = torch.Generator().manual_seed(seed)
    train_ids = corpus.train.long()
    for _ in range(tokens // (s.context * s.batch_size)):
        offsets = torch.randint(0, len(train_ids) - s.context, (s.batch_size,), generator=generator)
        batch = torch.stack([train_ids[o : o + s.context] for o in offsets.tolist()])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        warmup.step()
        optimizer.zero_grad()
    held_out = corpus.validation.long()
    starts = torch.linspace(0, len(held_out) - s.context, s.eval_windows).long().tolist()
    windows = torch.stack([held_out[i : i + s.context] for i in starts])
    with torch.no_grad():
        return model.eval()(input_ids=windows, labels=windows).loss.item()


def test_a_live_run_gives_the_loss_of_an_independent_training_with_the_same_seed(tiny_live, grid_answer):
    assert tiny_live["done"] and not tiny_live["stopped"]
    assert (tiny_live["size"], tiny_live["tokens"], tiny_live["seed"]) == TINY_RUN
    assert tiny_live["loss"] == pytest.approx(independent_training(*TINY_RUN), abs=1e-5)
    fit = grid_answer["fit"]
    n, d = tiny_live["parameters"], tiny_live["tokens"]
    assert tiny_live["predicted_loss"] == pytest.approx(
        fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]
    )
    another_seed = last(scaling_law("1 x 12", 2_048, 8))["live"]
    assert another_seed["loss"] != tiny_live["loss"]


def test_the_code_accordion_prints_the_fit_and_the_live_runs_loss(tiny_live, grid_answer):
    result = grid_answer | {"live": tiny_live}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(reproduce_code(result), "<code accordion>", "exec"), {})
    fit_line, run_line = printed.getvalue().strip().splitlines()
    values = json.loads(fit_line.split("=", 1)[1])
    assert values == pytest.approx(
        [round(grid_answer["fit"][k], 4) for k in ("E", "A", "alpha", "B", "beta")], abs=2e-4
    )
    numbers = re.search(r"N = ([\d,]+), D = ([\d,]+): validation loss ([\d.]+), the law predicts ([\d.]+)", run_line)
    assert int(numbers[1].replace(",", "")) == tiny_live["parameters"]
    assert float(numbers[3]) == pytest.approx(tiny_live["loss"], abs=1e-4)
    assert float(numbers[4]) == pytest.approx(tiny_live["predicted_loss"], abs=1e-4)


def test_setting_stop_ends_the_live_run_with_its_loss_where_it_stopped():
    stop = threading.Event()
    results = scaling_law("2 x 32", 262_144, 0, stop)
    for result in results:
        live = result["live"]
        if live and live["step"] >= 2:
            stop.set()
    assert live["stopped"] == "stopped" and not live["done"]
    assert live["step"] < live["total_steps"]
    assert live["checkpoints"][-1]["tokens"] == live["tokens"] == live["step"] * SETTINGS.tokens_per_step


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("10 x 10", 4096, 0), "Size must be one of"),
        ((None, 4096, 0), "Size is missing"),
        (("1 x 12", 1_000_000, 0), "Training tokens must be between"),
        (("1 x 12", 3_000, 0), "multiple of 1,024"),
        (("1 x 12", 4096.5, 0), "whole number"),
        (("1 x 12", 4096, -1), "Seed must be between"),
        (("1 x 12", "4096", 0), "Training tokens must be a number"),
    ],
)
def test_bad_live_settings_are_refused_with_a_message(arguments, message):
    with pytest.raises(HubError, match=message):
        check_live(*arguments)


def test_the_figure_draws_the_grid_and_a_live_run(grid_answer, tiny_live):
    image = law_figure(grid_answer | {"live": tiny_live})
    assert image.width > 1000 and image.height > 400


# --- over HTTP ----------------------------------------------------------------------------------------------------


def test_api_without_a_live_run_returns_the_grid_and_its_laws(client, grid_answer):
    answer = client.predict(api_name="/scaling_law")
    assert answer["live"] is None
    assert answer["points"] == load_grid()["points"]
    assert answer["fit"] == pytest.approx(grid_answer["fit"])


def test_api_live_run_equals_the_core_run(client, tiny_live):
    answer = client.predict(*TINY_RUN, api_name="/scaling_law")
    assert answer["live"]["loss"] == pytest.approx(tiny_live["loss"], abs=1e-6)
    assert answer["live"]["parameters"] == tiny_live["parameters"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["2 x 32", float("nan"), 0], "Training tokens must be between"),
        (["2 x 32", float("inf"), 0], "Training tokens must be between"),
        (["2 x 32", 10**30, 0], "Training tokens is far too large: a number of 31 digits. It must be between"),
        (["2 x 32", 4096, 2**80], "Seed is far too large: a number of 25 digits. It must be between 0 and"),
        (["<b>huge</b>", 4096, 0], "Size must be one of"),
        ([["2 x 32"], 4096, 0], "Size must be one of"),
        (["2 x 32", {"a": 1}, 0], "Training tokens must be a number"),
        (["2 x 32", True, 0], "Training tokens must be a number"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(hub_url, client, data, message):
    assert message in (error_message(rest_call(hub_url, "scaling_law", data)) or "")
    assert client.predict(api_name="/scaling_law")["points"]


def test_api_cancel_really_stops_the_live_run(hub_url):
    client = Client(hub_url, verbose=False)
    job = client.submit("3 x 96", 262_144, 0, api_name="/scaling_law")
    deadline = time.monotonic() + 60
    while not any(t.name == "scaling-law" for t in running_jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(t.name == "scaling-law" for t in running_jobs), "the live run never started"
    job.cancel()
    deadline = time.monotonic() + 20
    while any(t.name == "scaling-law" for t in running_jobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name == "scaling-law" for t in running_jobs), "the live run kept training after Cancel"


# --- the page -----------------------------------------------------------------------------------------------------


def test_browser_a_link_fills_in_the_run_and_an_example_trains_live(page, hub_url):
    page.goto(f"{hub_url}?tab=scaling-laws&size=3%20x%2064&tokens=4096&seed=5")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.get_by_label("Model size (layers x width)").input_value().startswith("3 x 64")
    assert page.get_by_label("Training tokens").input_value().startswith("4,096 bytes")
    page.locator("#scaling-laws-figure img").wait_for()  # the grid and its laws, before any training
    assert "0.076" in page.locator("#scaling-laws-exponents").inner_text()
    page.locator("#scaling-laws-examples [data-testid=dataset-cell-0-1]").click()  # 1 x 12, 8,192 bytes
    page.wait_for_function(
        "() => document.querySelector('#scaling-laws-live')?.innerText.includes('Your run')", timeout=120_000
    )
    status = page.locator("#scaling-laws-live").inner_text()
    assert "1 x 12, 1,908 parameters" in status and "8,192 tokens" in status and "%" in status
    assert page.get_by_label("Model size (layers x width)").input_value().startswith("1 x 12")
