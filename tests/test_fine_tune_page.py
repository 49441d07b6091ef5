"""Fine-tune, the tab in a real browser: training then classifying, Stop, the tables fitting the page, the plots
saved as PNG, links; and what the tab shows (percent, whole epochs) and documents."""

import io
import re
import time
import zipfile

import pytest

from demos.fine_tune import BUILTIN, UPLOAD, TrainingSettings, running_trainings, train_stream


def write_csv(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_fine_tunes_then_classifies_and_offers_the_model(page, hub_url):
    page.goto(f"{hub_url}?tab=fine-tune")
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    page.locator("#fine-tune-status").get_by_text("Done").wait_for(timeout=120_000)
    assert "after training" in page.locator("#fine-tune-probes").inner_text()
    page.locator("#fine-tune-per-class").get_by_text("positive").first.wait_for()
    page.get_by_role("button", name="Classify").click()
    page.locator("#fine-tune-prediction .output-class").wait_for()
    assert page.locator("#fine-tune-prediction .output-class").inner_text() in ("positive", "negative")
    page.get_by_role("button", name="Download the fine-tuned model (zip)").click()
    link = page.locator("#fine-tune-download a[href*='fine-tuned-model.zip']")
    link.wait_for()
    archive = zipfile.ZipFile(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
    assert {"fine-tuned-model/config.json", "fine-tuned-model/model.safetensors"} <= set(archive.namelist())


def test_browser_the_dataset_choice_and_the_file_always_agree(page, hub_url, tmp_path):
    from playwright.sync_api import expect

    rows = "\n".join(f"{'meow' if i % 2 else 'woof'} {i},{'cat' if i % 2 else 'dog'}" for i in range(30))
    pets = write_csv(tmp_path / "pets.csv", "text,label\n" + rows)
    page.goto(f"{hub_url}?tab=fine-tune")
    upload = page.locator("#fine-tune-csv input[type=file]")
    upload.set_input_files(str(pets))
    expect(page.locator("#fine-tune-dataset").get_by_label(UPLOAD)).to_be_checked()  # a file given is the data
    expect(page.locator("#fine-tune-csv")).to_contain_text("pets")
    page.locator("#fine-tune-dataset").get_by_label(BUILTIN).check()  # picking the built-in set lets go of it
    expect(page.locator("#fine-tune-csv")).not_to_contain_text("pets")


# --- what the tab shows (issue 12) ----------------------------------------------------------------------------


def test_the_tab_shows_percent_whole_epochs_and_what_a_stop_leaves(tiny_backbone, small_data):
    from demos.fine_tune.views import accuracy_frame, per_class_frame, status_text, stopped_text

    *_, run = train_stream(tiny_backbone, small_data, TrainingSettings(epochs=2, batch_size=16, max_length=32))
    assert accuracy_frame(run)["epoch"].tolist() == ["before", "1", "2"]  # whole epochs, not 0.5 steps
    assert accuracy_frame(run)["held-out accuracy"].tolist() == run.epoch_accuracy
    row = per_class_frame(run).set_index("class").loc["positive"]
    before, after = run.before.per_class["positive"], run.after.per_class["positive"]
    assert row["recall: before → after"] == f"{before['recall']:.0%} → {after['recall']:.0%}"
    assert row["held-out texts"] == after["support"]

    stop = __import__("threading").Event()
    for stopped in train_stream(tiny_backbone, small_data, TrainingSettings(epochs=10, batch_size=1), stop=stop):
        if stopped.step == 3:
            stop.set()
    assert status_text(stopped) == stopped_text(3, stopped.total_steps, earlier_model=False)
    assert "Stopped at step 3 of 480" in status_text(stopped) and "not kept" in status_text(stopped)
    assert "earlier run is still the one used" in status_text(stopped, earlier_model=True)
    assert "before training began" in stopped_text(None, None, earlier_model=False)


def test_every_public_endpoint_documents_each_parameter(tiny_settings, store):
    from gradio.utils import get_function_description

    from hub.app import build_app

    app = build_app(tiny_settings, store)
    documented = {fn.api_name: fn.fn for fn in app.fns.values() if fn.api_name in ENDPOINTS}
    assert set(documented) == ENDPOINTS
    for name, fn in documented.items():
        description, parameters, returns = get_function_description(fn)
        assert description and returns, name
        for parameter, meaning in parameters.items():
            assert meaning or parameter in ("request", "progress"), f"{name}: {parameter} is not described"


ENDPOINTS = {"fine_tune", "fine_tune_predict", "fine_tune_attention"}


def open_tab(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.hubLinkRead === true")  # the link has been read and the tab opened


def test_browser_stop_says_so_at_once_and_clears_the_half_drawn_tables(page, hub_url, slow_training):
    from playwright.sync_api import expect

    open_tab(page, f"{hub_url}?tab=fine-tune&epochs=1")  # a short run first: its tables are on the page
    start, stop = page.locator("#fine-tune-start"), page.locator("#fine-tune-stop")
    expect(stop).to_be_disabled()  # nothing to stop yet
    start.click()
    page.locator("#fine-tune-per-class").get_by_text("positive").first.wait_for(timeout=120_000)
    expect(page.locator("#fine-tune-confusion")).to_contain_text("predicted positive")

    for setting, value in (("Epochs", "10"), ("Batch size", "1")):  # 2,400 slow steps: it is stopped long before
        box = page.get_by_label(f"number input for {setting}")
        box.fill(value)
        box.press("Enter")
    start.click()
    status = page.locator("#fine-tune-status p").first
    expect(status).to_contain_text(re.compile(r"step \d+/2400"), timeout=60_000)  # this run's steps, not the last's
    expect(page.locator("#fine-tune-probes .virtual-body")).to_contain_text("I loved every minute of it.")
    stop.scroll_into_view_if_needed()
    stop.click()
    expect(status).to_contain_text("Stopped at step", timeout=3_000)  # at once, where the progress line was
    expect(status).to_contain_text("of 2400. This run's model was not kept; your model from an earlier run")
    for table in ("#fine-tune-probes", "#fine-tune-per-class", "#fine-tune-confusion"):
        expect(page.locator(f"{table} .virtual-body")).not_to_contain_text("positive")
    expect(page.locator("#fine-tune-probes .virtual-body")).not_to_contain_text("I loved every minute of it.")
    deadline = time.monotonic() + 5
    while running_trainings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running_trainings, "the training kept running after Stop"
    page.wait_for_timeout(1_000)  # a late update of the stopped stream must not bring the progress line back
    expect(status).to_contain_text("Stopped at step")
    expect(stop).to_be_disabled()


def overflowing_tables(page) -> list[str]:
    """The tables whose own box would need a horizontal scroll bar."""
    return page.evaluate(
        """() => ['#fine-tune-probes', '#fine-tune-per-class', '#fine-tune-confusion'].filter(id =>
            [...document.querySelectorAll(id + ' *')].some(e => e.clientHeight > 0 &&
                ['auto', 'scroll'].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 1))"""
    )


@pytest.mark.parametrize("viewport, query", [((1280, 900), ""), ((1280, 720), "&present=1")])
def test_browser_results_fit_the_page_beside_the_button_with_whole_epochs(page, hub_url, viewport, query):
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    open_tab(page, f"{hub_url}?tab=fine-tune&epochs=2{query}")
    start = page.locator("#fine-tune-start")
    start.click()
    page.locator("#fine-tune-per-class").get_by_text("positive").first.wait_for(timeout=120_000)
    page.locator("#fine-tune-confusion").get_by_text("predicted positive").first.wait_for()
    assert overflowing_tables(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]
    # The button sits at the top of the settings, level with the first line of the results.
    button, status = start.bounding_box(), page.locator("#fine-tune-status").bounding_box()
    assert abs(button["y"] - status["y"]) < 40 and button["x"] + button["width"] <= status["x"]
    # Vega describes its axes for screen readers: whole epochs, accuracy in percent.
    x_axis = page.locator("#fine-tune-accuracy g[aria-label^='X-axis']").get_attribute("aria-label")
    assert x_axis.endswith("discrete scale with 3 values: before, 1, 2")
    y_axis = page.locator("#fine-tune-accuracy g[aria-label^='Y-axis']").get_attribute("aria-label")
    assert y_axis.endswith("from 0% to 100%")


def test_browser_plots_save_as_png_at_twice_their_size(page, hub_url):
    import struct

    open_tab(page, f"{hub_url}?tab=fine-tune&epochs=1")
    page.locator("#fine-tune-start").click()
    page.locator("#fine-tune-status").get_by_text("Done").wait_for(timeout=120_000)
    for plot in ("#fine-tune-loss", "#fine-tune-accuracy"):
        chart = page.locator(f"{plot} canvas, {plot} svg.marks").first
        chart.wait_for()
        width = chart.bounding_box()["width"]
        with page.expect_download() as download:
            page.locator(f"{plot} button[aria-label='Export']").click()
        png = open(download.value.path(), "rb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        png_width, png_height = struct.unpack(">II", png[16:24])
        assert png_width >= 2 * width - 2 and png_height > 100


def test_browser_a_link_sets_the_training_settings(page, hub_url):
    from playwright.sync_api import expect

    open_tab(page, f"{hub_url}?tab=fine-tune&epochs=2&learning_rate=0.0005&batch_size=16&freeze_backbone=true&seed=7")
    expect(page.get_by_label("number input for Epochs")).to_have_value("2")
    expect(page.get_by_label("number input for Batch size")).to_have_value("16")
    expect(page.locator("#fine-tune-learning-rate input")).to_have_value("0.0005")
    expect(page.get_by_label("Freeze the backbone")).to_be_checked()
    expect(page.locator("#fine-tune-seed input")).to_have_value("7")
