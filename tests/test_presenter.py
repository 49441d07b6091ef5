"""For speakers: presenter mode (?present=1 or the switch), links that carry a tab and its inputs, the address bar
that follows the open tab, and the Copy link button."""

from urllib.parse import unquote

import gradio as gr
import pytest

from hub.errors import HubError
from hub.links import read_linked_value

FILL_MASK_LINK = "?tab=fill-mask&text=Paris%20is%20the%20[MASK]%20of%20France.&top_k=3"


def open_hub(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.hubLinkRead === true")  # the link has been read and the tab opened


def font_size(page, selector: str) -> float:
    return page.locator(selector).first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")


# --- the values a link may carry, checked on the server (no browser) ---------------------------------------------


def test_a_linked_value_is_read_as_its_input_would_take_it():
    assert read_linked_value(gr.Slider(1, 10, step=1), "top_k", "3") == 3
    assert read_linked_value(gr.Slider(0.05, 2.0, step=0.05), "temperature", "0.7") == pytest.approx(0.7)
    assert read_linked_value(gr.Radio([("BERT", "encoder"), ("MiniLM", "minilm")]), "model", "minilm") == "minilm"
    assert read_linked_value(gr.Number(precision=0), "seed", "42") == 42
    assert read_linked_value(gr.Textbox(), "prompt", "ends with a space ") == "ends with a space "


@pytest.mark.parametrize(
    "component, text, says",
    [
        (gr.Slider(1, 10, step=1), "99", "between 1 and 10"),
        (gr.Slider(1, 10, step=1), "2.5", "whole number"),
        (gr.Slider(1, 10, step=1), "nan", "between"),
        (gr.Slider(1, 10, step=1), "three", "must be a number"),
        (gr.Radio(["sampling", "greedy"]), "beam", "must be one of sampling, greedy"),
        (gr.Textbox(max_length=5), "too long for it", "5"),
        (gr.Checkbox(), "maybe", "true or false"),
    ],
)
def test_a_linked_value_out_of_range_is_refused_with_a_reason(component, text, says):
    with pytest.raises(HubError, match=says):
        read_linked_value(component, "value", text)


# --- in the browser ---------------------------------------------------------------------------------------------


def test_presenter_mode_folds_the_intro_away_and_enlarges_the_text(page, hub_url):
    open_hub(page, f"{hub_url}?tab=fill-mask")
    normal = font_size(page, "[role=tab]")
    label = font_size(page, "textarea")
    assert page.locator("#hub-intro").is_visible() and page.locator("#tiny-banner").is_visible()

    open_hub(page, f"{hub_url}?tab=fill-mask&present=1")
    assert page.evaluate("document.body.classList.contains('present')")
    assert not page.locator("#hub-intro").is_visible() and not page.locator("#tiny-banner").is_visible()
    assert font_size(page, "[role=tab]") >= 1.4 * normal
    assert font_size(page, "textarea") >= 1.4 * label

    # The switch turns it off again, and the address bar follows it.
    page.locator("#presenter-switch input").click()
    assert page.locator("#hub-intro").is_visible()
    assert "present" not in page.url and "tab=fill-mask" in page.url


@pytest.mark.parametrize("width, height", [(1280, 720), (1024, 768)])
def test_in_presenter_mode_every_tab_fits_a_projector(page, hub_url, width, height):
    page.set_viewport_size({"width": width, "height": height})
    open_hub(page, f"{hub_url}?present=1")
    chapters = page.locator("#chapters > .tab-wrapper [role=tab]")
    assert chapters.count() >= 7, "Start here and a tab per chapter"
    seen = 0
    for chapter in chapters.all():
        assert chapter.is_visible(), "every chapter in the bar, none in a '...' menu"
        chapter.click()
        page.wait_for_timeout(300)
        for tab in page.locator(".demo-tabs [role=tab]").all():
            if not tab.is_visible():  # another chapter's
                continue
            tab.click()
            page.wait_for_timeout(300)
            seen += 1
            # The page itself never scrolls sideways (a wide table may scroll inside its own box).
            assert page.evaluate("document.documentElement.scrollWidth") <= width, tab.inner_text()
    assert seen >= 9
    assert page.locator(".overflow-menu").count() == 0


def test_an_unknown_tab_opens_the_first_tab_and_says_so(page, hub_url):
    open_hub(page, f"{hub_url}?tab=no-such-demo")
    assert "There is no tab 'no-such-demo'" in page.locator(".toast-body").first.inner_text()
    first = page.get_by_role("tab").first
    assert first.get_attribute("aria-selected") == "true"
    assert page.url.endswith(f"?tab={first.get_attribute('data-tab-id')}")


def test_switching_tabs_writes_the_tab_into_the_address_bar(page, hub_url):
    open_hub(page, f"{hub_url}?tab=fill-mask&present=1")
    page.get_by_role("tab", name="Attention").click()
    page.wait_for_function("() => location.search.includes('tab=attention')")
    assert page.url.endswith("?tab=attention&present=1")


def test_a_link_fills_in_the_tab_inputs(page, hub_url):
    open_hub(page, hub_url + FILL_MASK_LINK)
    assert page.get_by_label("Text with a mask").input_value() == "Paris is the [MASK] of France."
    assert page.get_by_label("number input for Predictions per mask").input_value() == "3"


def test_a_link_with_a_bad_value_says_so_and_keeps_the_default(page, hub_url):
    open_hub(page, f"{hub_url}?tab=fill-mask&top_k=999&colour=red")
    message = page.locator(".toast-body").first.inner_text()
    assert "top_k must be between 1 and" in message and "'colour' is not an input of this tab" in message
    assert page.get_by_label("number input for Predictions per mask").input_value() != "999"


def test_copy_link_gives_a_link_that_restores_the_inputs(page, hub_url):
    open_hub(page, f"{hub_url}?tab=text-generation&present=1")
    prompt = page.get_by_label("Prompt")
    prompt.fill("A slide's prompt, with a trailing space & an ampersand ")
    temperature = page.get_by_label("number input for Temperature")
    temperature.fill("1.3")
    temperature.press("Enter")
    page.get_by_label("greedy").check()
    copy = page.locator("#text-generation-copy-link")
    copy.scroll_into_view_if_needed()
    copy.click()
    link_box = page.locator("#text-generation-link textarea")
    page.wait_for_function("() => document.querySelector('#text-generation-link textarea').value.includes('tab=')")
    link = link_box.input_value()
    assert unquote(link) == unquote(page.url), "the address bar shows the same link"
    assert "present=1" in link and "%20" in link

    again = page.context.new_page()
    open_hub(again, link)
    assert again.get_by_label("Prompt").input_value() == "A slide's prompt, with a trailing space & an ampersand "
    assert again.get_by_label("number input for Temperature").input_value() == "1.3"
    assert again.get_by_label("greedy").is_checked()
    assert again.evaluate("document.body.classList.contains('present')")


# What a table or a textbox cuts off: a header or cell whose text is wider than its box, a column past the table's
# right edge, a word broken inside (a one-word cell on two lines), a textbox showing fewer lines than it holds.
CUT_JS = """
(selector) => {
    const cut = [];
    for (const box of document.querySelectorAll(selector)) {
        const right = box.getBoundingClientRect().right;
        for (const cell of box.querySelectorAll("th, .body-cell")) {
            const text = cell.innerText.trim();
            if (!text || !cell.offsetParent) continue;
            if (cell.getBoundingClientRect().right > right + 1) cut.push(`${text}: past the right edge`);
            for (const inner of [cell, ...cell.querySelectorAll("*")])
                if (inner.scrollWidth > inner.clientWidth + 1 && getComputedStyle(inner).overflowX === "hidden")
                    cut.push(`${text}: cut`);
            const line = parseFloat(getComputedStyle(cell).lineHeight) || 30;
            const span = [...cell.querySelectorAll("span")].find(s => s.innerText.trim() === text) || cell;
            if (!/\\s/.test(text) && span.getBoundingClientRect().height > 1.6 * line) cut.push(`${text}: broken`);
        }
    }
    for (const t of document.querySelectorAll("textarea"))
        if (t.offsetParent && t.scrollHeight > t.clientHeight + 2) cut.push(`textbox ${t.value.slice(0, 30)}: cut`);
    return cut;
}
"""


def test_on_a_projector_tables_and_textboxes_show_all_they_hold(page, hub_url):
    """Presenter mode turned on after the page was drawn (the switch), at 1024x768: the attention tab's step-by-step
    tables and its single-line textboxes; at 1280x720, the layers tab's parts table beside its diagram."""
    page.set_viewport_size({"width": 1024, "height": 768})
    open_hub(page, f"{hub_url}?tab=attention&run=1")
    page.locator("#attention-decoder-steps .body-cell").first.wait_for()
    page.locator("#presenter-switch input").click()
    page.wait_for_timeout(300)
    assert page.evaluate(CUT_JS, "#attention-encoder-steps, #attention-decoder-steps") == []

    page.set_viewport_size({"width": 1280, "height": 720})
    open_hub(page, f"{hub_url}?tab=layers&run=1&present=1")
    parts = page.locator(".block", has_text="Parts and parameter counts").last
    parts.get_by_text("embeddings", exact=True).first.wait_for()
    parts.evaluate("box => box.classList.add('parts-under-test')")
    assert page.evaluate(CUT_JS, ".parts-under-test") == []
