"""Text to image, the tab in a real browser: drawing, Stop, a preview that never flashes blank, examples, links;
and the endpoint's documentation."""

import time

from demos.text_to_image import EXAMPLES, running_generations
from hub.app import build_app
from tests.test_text_to_image import CountingUNet


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_browser_draws_an_image_and_shows_the_code(page, hub_url):
    page.goto(f"{hub_url}?tab=text-to-image")
    set_slider(page, "text-to-image-width", 128)
    set_slider(page, "text-to-image-height", 96)
    page.get_by_role("button", name="Generate").click()
    page.locator("#text-to-image-image img").first.wait_for()
    page.locator("#text-to-image-info").get_by_text("128x96 px, 1 step").wait_for()
    page.get_by_text("Code: reproduce this with the library").locator("visible=true").first.click()
    page.get_by_text("AutoPipelineForText2Image.from_pretrained").locator("visible=true").first.wait_for()


def test_browser_stop_button_ends_the_generation_within_one_step(page, hub_url, store):
    # Steps of a second: the click lands inside step 2, and Stop must keep step 3 from starting. (Cancelling the
    # event alone would let step 3 start: Gradio closes the stream only when the next frame arrives.)
    with CountingUNet(store.get("text-to-image").pipe.unet, delay_s=1.0) as unet:
        page.goto(f"{hub_url}?tab=text-to-image")
        set_slider(page, "text-to-image-steps", 40)
        set_slider(page, "text-to-image-width", 64)
        set_slider(page, "text-to-image-height", 64)
        page.get_by_role("button", name="Generate").click()
        page.locator("#text-to-image-image img").first.wait_for()  # step 1's preview is on screen
        page.get_by_role("button", name="Stop").click()
        steps_at_stop = unet.calls
        deadline = time.monotonic() + 10
        while running_generations and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running_generations, "the pipeline thread kept running after Stop"
        assert unet.calls == steps_at_stop, "a new step started after Stop"


def open_tab(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.hubLinkRead === true")  # the link has been read and the tab opened


# In every animation frame once the first preview is on screen: is the image what the eye sees at its centre (not a
# progress overlay, not an empty frame), and what does the step line say?
WATCH_THE_PREVIEW = """() => {
    window.seen = [];
    const look = () => {
        const img = document.querySelector('#text-to-image-image img');
        if (img && img.complete && img.naturalWidth > 0) {
            const box = img.getBoundingClientRect();
            const top = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
            window.seen.push([top === img, (document.querySelector('#text-to-image-step p')?.innerText ?? '').trim()]);
        }
        if (!window.done) requestAnimationFrame(look);
    };
    requestAnimationFrame(look);
}"""


def test_browser_the_preview_never_flashes_blank_and_the_step_stays_in_view(page, hub_url, store):
    import re

    with CountingUNet(store.get("text-to-image").pipe.unet, delay_s=0.15):  # steps a visitor can follow
        open_tab(page, f"{hub_url}?tab=text-to-image&steps=12&width=64&height=64&show_steps=true")
        page.locator("#text-to-image-image").scroll_into_view_if_needed()
        page.evaluate(WATCH_THE_PREVIEW)
        page.get_by_role("button", name="Generate").click()
        page.locator("#text-to-image-info").get_by_text("64x64 px, 12 steps").wait_for()
        page.wait_for_timeout(300)
        seen = page.evaluate("window.done = true, window.seen")
    assert len(seen) > 30
    assert all(visible for visible, _ in seen), "the preview was covered or blank in some frames"
    # The step line comes a round trip after the frame it counts (a State's change: see the tab); from its first
    # line on it never leaves the screen.
    seen = seen[next(i for i, (_, line) in enumerate(seen) if line) :]
    steps = [int(m.group(1)) for _, line in seen if (m := re.fullmatch(r"Step (\d+) of 12", line))]
    lines = {line for _, line in seen}
    assert all(re.fullmatch(r"Encoding the prompt \(12 steps to go\)|Step \d+ of 12|Done: 12 steps", s) for s in lines)
    assert steps == sorted(steps) and len(set(steps)) >= 3, "the step line counts the steps up, in view"
    assert seen[-1][1] == "Done: 12 steps"


def test_browser_clicking_an_example_draws_it(page, hub_url):
    open_tab(page, f"{hub_url}?tab=text-to-image&width=64&height=96")
    example = EXAMPLES[2][0]
    page.get_by_text(example).click()
    page.locator("#text-to-image-info").get_by_text("64x96 px, 1 step").wait_for()
    assert page.locator("#text-to-image-prompt textarea").input_value() == example
    page.get_by_text("Code: reproduce this with the library").locator("visible=true").first.click()
    page.get_by_text(f"pipe({example!r}").locator("visible=true").first.wait_for()  # drawn from the example


def test_browser_a_link_fills_in_the_prompt_and_settings(page, hub_url):
    from playwright.sync_api import expect

    open_tab(page, f"{hub_url}?tab=text-to-image&prompt=A%20red%20cube%20&steps=3&width=128&seed=42&show_steps=no")
    expect(page.locator("#text-to-image-prompt textarea")).to_have_value("A red cube ")
    expect(page.locator("#text-to-image-steps input[type=number]")).to_have_value("3")
    expect(page.locator("#text-to-image-width input[type=number]")).to_have_value("128")
    expect(page.get_by_label("Show the steps (decoded with the tiny autoencoder)")).not_to_be_checked()


def test_text_to_image_documents_each_parameter(tiny_settings, store):
    from gradio.utils import get_function_description

    app = build_app(tiny_settings, store)
    (fn,) = [fn.fn for fn in app.fns.values() if fn.api_name == "text_to_image"]
    description, parameters, returns = get_function_description(fn)
    assert description.startswith("Draw an image from a prompt") and returns
    assert all(meaning for name, meaning in parameters.items() if name not in ("request", "progress")), parameters
