"""Presenter mode: `?present=1`, or the switch at the top of the page, sets the class `present` on the page body;
hub/presenter.css then enlarges the type and folds the title, intro and banners away. Nothing is loaded from
outside: the stylesheet travels inside the page."""

import json
from pathlib import Path

import gradio as gr

PRESENTER_CSS = (Path(__file__).parent / "presenter.css").read_text()

SWITCH_HTML = '<label><input type="checkbox" id="presenter-checkbox"> Presenter mode</label>'

# Runs once, when the switch is drawn: puts the stylesheet into the page, follows ?present=1, and keeps the address
# bar in step with the switch, so a link copied in presenter mode opens in presenter mode.
SWITCH_JS = f"""
if (!document.getElementById("presenter-css")) {{
    const style = document.createElement("style");
    style.id = "presenter-css";
    style.textContent = {json.dumps(PRESENTER_CSS)};
    document.head.appendChild(style);
}}
const box = element.querySelector("input");
const show = (on) => {{
    document.body.classList.toggle("present", on);
    box.checked = on;
}};
show(["1", "true", "yes", "on"].includes(new URLSearchParams(location.search).get("present")));
box.addEventListener("change", () => {{
    show(box.checked);
    // Edited as text, so the other parameters stay exactly as they were written (%20 stays %20).
    let search = location.search.replace(/([?&])present=[^&]*&?/g, "$1").replace(/[?&]$/, "");
    if (box.checked) search += (search ? "&" : "?") + "present=1";
    history.replaceState(null, "", location.pathname + search);
}});
"""


def presenter_switch() -> gr.HTML:
    """The "Presenter mode" checkbox, kept visible in presenter mode so it can be turned off."""
    return gr.HTML(SWITCH_HTML, js_on_load=SWITCH_JS, elem_id="presenter-switch")
