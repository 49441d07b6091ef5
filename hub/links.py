"""Links that carry a tab and its inputs, for slides: `?tab=fill-mask&text=Paris%20is%20the%20[MASK]%20of%20France.`
opens that tab with that text filled in. One mechanism for every tab:

- a tab function calls `link_inputs(DEMO_ID, text=text, top_k=top_k)`: those inputs can be set from the address,
  by these names, and the tab gets a "Copy link" button that gives the link for the current values;
- `build_app` calls `open_links(...)` once: on page load it opens the linked tab and fills its inputs, each value
  checked on the server as the tab's own events would check it; an unknown tab or a bad value is said, never ignored;
- switching tabs writes `?tab=<id>` into the address bar, so the address is always the link to paste.
"""

import json
import math
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import gradio as gr
from gradio.components import Component

from hub.checks import check_choice, check_int, check_number, check_text
from hub.errors import HubError

RESERVED = ("tab", "chapter", "present", "run", "press")  # query parameters the shell reads itself
BOOLEAN_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(("0", "false", "no", "off"), False)

# Every Blocks app keeps its own table {demo id: {parameter name: component}}, filled while its tabs are built.
_LINKED: "weakref.WeakKeyDictionary[gr.Blocks, dict[str, dict[str, Component]]]" = weakref.WeakKeyDictionary()
_RUNS: "weakref.WeakKeyDictionary[gr.Blocks, dict[str, gr.Button]]" = weakref.WeakKeyDictionary()
START_HERE = "start-here"  # the first tab's id: the guided start

# The address for a tab: only `present` survives a switch (the other parameters belong to the tab that is left).
# Written with encodeURIComponent, so a space reads %20 in a slide, as people write it.
ADDRESS_JS = """
(tab, values) => {
    const parts = [["tab", tab]];
    if (document.body.classList.contains("present")) parts.push(["present", "1"]);
    for (const [name, value] of values) if (value !== null && value !== undefined) parts.push([name, String(value)]);
    const query = parts.map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
    return location.origin + location.pathname + "?" + query;
}
"""


def linked_inputs(app: gr.Blocks) -> dict[str, dict[str, Component]]:
    """{demo id: {parameter name: component}} for every tab of `app` that called `link_inputs`."""
    return _LINKED.get(app, {})


def link_inputs(demo_id: str, run: gr.Button | None = None, **inputs: Component) -> gr.Textbox:
    """Called inside a tab function: `?tab=<demo_id>&<name>=<value>` sets these inputs, and a "Copy link" button
    (placed here) puts the link for their current values in the clipboard and in a box beside it. With `run` (the
    tab's main button), `&run=1` also presses it once the inputs are set: the link opens the view already drawn."""
    app = gr.context.Context.root_block
    if app is None:
        raise RuntimeError("link_inputs is called inside a tab, while the app's Blocks are being built")
    _LINKED.setdefault(app, {})[demo_id] = inputs
    if run is not None:
        run.elem_id = run.elem_id or f"{demo_id}-run"
        _RUNS.setdefault(app, {})[demo_id] = run
    with gr.Row(elem_classes="hub-link-row"):
        button = gr.Button("Copy link", size="sm", scale=0, elem_id=f"{demo_id}-copy-link")
        link = gr.Textbox(
            show_label=False,
            placeholder="The link for the current inputs appears here",
            interactive=False,
            buttons=["copy"],
            elem_id=f"{demo_id}-link",
            scale=4,
        )
    names = json.dumps(list(inputs))
    copy_js = f"""
    (...values) => {{
        const names = {names};
        const url = ({ADDRESS_JS})({json.dumps(demo_id)}, names.map((name, i) => [name, values[i]]));
        history.replaceState(null, "", url);
        navigator.clipboard?.writeText(url).catch(() => {{}});  // refused without a user gesture: the box has it
        return url;
    }}
    """
    button.click(None, list(inputs.values()), link, js=copy_js, api_visibility="private")
    return link


def read_linked_value(component: Component, name: str, text: str):
    """The value for `component` that the address gives as `text`, checked as the component's own range or choices
    allow; a HubError says why it cannot be used."""
    if isinstance(component, gr.Textbox):
        return check_text(text, name, component.max_length or 5000)
    if isinstance(component, gr.Checkbox):
        if text.strip().lower() not in BOOLEAN_WORDS:
            raise HubError(f"{name} must be true or false, got {text!r}.")
        return BOOLEAN_WORDS[text.strip().lower()]
    if isinstance(component, gr.Radio | gr.Dropdown):
        by_text = {str(value): value for _, value in component.choices or []}
        return by_text[check_choice(text, name, list(by_text))]
    if isinstance(component, gr.Slider | gr.Number):
        try:
            number = float(text)
        except ValueError:
            raise HubError(f"{name} must be a number, got {text!r}.") from None
        number = int(number) if number.is_integer() else number  # a message then quotes "400", not "400.0"
        low = component.minimum if component.minimum is not None else -math.inf
        high = component.maximum if component.maximum is not None else math.inf
        whole = getattr(component, "precision", None) == 0 or (
            isinstance(component, gr.Slider) and float(component.step).is_integer() and float(low).is_integer()
        )
        value = check_int(number, name, low, high) if whole else check_number(number, name, low, high)
        if isinstance(component, gr.Slider) and whole and (value - low) % component.step:
            # a slider offers only its steps (dimensions of a sinusoid come in pairs)
            raise HubError(f"{name} must be {low:g} plus a multiple of {component.step:g}, got {text!r}.")
        return value
    raise HubError(f"{name} cannot be set from a link.")


@dataclass
class ChapterTabs:
    """One chapter of the page: its tab in the chapter bar, and the bar of its demos' tabs."""

    id: str
    tab: gr.Tab
    demo_tabs: gr.Tabs
    demo_ids: list[str]
    demo_blocks: list[gr.Tab]


def open_links(app: gr.Blocks, chapter_tabs: gr.Tabs, chapters: list[ChapterTabs], guide: Any = None) -> None:
    """On page load, open the chapter and tab the address names and fill its linked inputs (and, with `run=1`, run
    it); keep the address bar on the open tab as the visitor switches; wire Start here's buttons (`guide`) to open
    their views the same way. Called once by build_app, after every tab is built."""
    linked = linked_inputs(app)
    runs = run_buttons(app)
    slots = [(demo_id, name, component) for demo_id, inputs in linked.items() for name, component in inputs.items()]
    chapter_of = {demo_id: chapter for chapter in chapters for demo_id in chapter.demo_ids}
    tab_ids = list(chapter_of)
    outputs = [chapter_tabs, *[chapter.demo_tabs for chapter in chapters], *[component for _, _, component in slots]]

    def opened(query: dict[str, str], warn: bool = True) -> list:
        """The updates that open what `query` names: the chapter, its tab, the tab's inputs."""
        wanted, chapter_id = query.get("tab"), query.get("chapter")
        inputs_updates = [gr.update() for _ in slots]
        keep = [gr.update() for _ in chapters]
        if wanted is None and chapter_id is not None:
            if chapter_id not in {chapter.id for chapter in chapters}:
                gr.Warning(
                    f"There is no chapter {chapter_id!r} in this hub. Chapters: "
                    f"{', '.join(chapter.id for chapter in chapters)}.",
                    duration=15,
                )
                return [gr.Tabs(), *keep, *inputs_updates]
            return [gr.Tabs(selected=f"chapter-{chapter_id}"), *keep, *inputs_updates]
        if wanted is None or wanted == START_HERE:
            return [gr.Tabs(selected=START_HERE) if wanted else gr.Tabs(), *keep, *inputs_updates]
        if wanted not in tab_ids:
            gr.Warning(
                f"There is no tab {wanted!r} in this hub, so the first tab is open. Tabs: {', '.join(tab_ids)}.",
                duration=15,
            )
            return [gr.Tabs(selected=START_HERE), *keep, *inputs_updates]
        inputs = linked.get(wanted, {})
        problems = [f"{name!r} is not an input of this tab" for name in query if name not in (*RESERVED, *inputs)]
        for i, (demo_id, name, component) in enumerate(slots):
            if demo_id == wanted and name in query:
                try:
                    inputs_updates[i] = gr.update(value=read_linked_value(component, name, query[name]))
                except HubError as error:
                    problems.append(str(error))
        if problems and warn:
            gr.Warning(
                f"The link's {'; '.join(problems)} (left as it was; this tab's link inputs: {', '.join(inputs) or 'none'}).",
                duration=15,
            )
        chapter = chapter_of[wanted]
        demo_tabs = [gr.Tabs(selected=wanted) if c is chapter else gr.update() for c in chapters]
        return [gr.Tabs(selected=f"chapter-{chapter.id}"), *demo_tabs, *inputs_updates]

    def open_link(request: gr.Request) -> list:
        return opened(dict(request.query_params) if request else {})

    app.load(open_link, None, outputs, api_visibility="private").then(
        None, js=sync_address_js(run_ids(runs), tab_ids), api_visibility="private"
    )
    for chapter in chapters:
        chapter.tab.select(
            None,
            js=f"() => {{ if (window.hubLinkRead) history.replaceState(null, '', ({ADDRESS_JS})({json.dumps(chapter.demo_ids[0])}, [])); }}"
            if len(chapter.demo_ids) == 1
            else f"() => {{ if (window.hubLinkRead) history.replaceState(null, '', location.pathname + '?chapter={chapter.id}'"
            " + (document.body.classList.contains('present') ? '&present=1' : '')); }",
            api_visibility="private",
        )
        for demo_id, tab in zip(chapter.demo_ids, chapter.demo_blocks):
            # The first tab is selected as the page is drawn, before the link is read: only later switches are written.
            tab.select(
                None,
                js=f"() => {{ if (window.hubLinkRead) history.replaceState(null, '', ({ADDRESS_JS})({json.dumps(demo_id)}, [])); }}",
                api_visibility="private",
            )
    if guide is not None:
        for button, query in guide.buttons:
            button.click(lambda query=query: opened(query, warn=False), None, outputs, api_visibility="private").then(
                None, js=run_js(query, run_ids(runs)), api_visibility="private"
            )


def run_buttons(app: gr.Blocks) -> dict[str, gr.Button]:
    """{demo id: the button that runs it} for every tab that gave `link_inputs` a `run` button."""
    return _RUNS.get(app, {})


def run_ids(runs: dict[str, gr.Button]) -> dict[str, str]:
    return {demo_id: button.elem_id for demo_id, button in runs.items()}


def run_js(query: dict[str, str], ids: dict[str, str]) -> str:
    """After Start here opened a view: write its link into the address bar and press its run button."""
    link = "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items() if k != "press")
    run_id = ids.get(query.get("tab", "")) if query.get("run") == "1" else None
    target = f"#{run_id}" if run_id else query.get("press")  # a run button, or what to click instead (an example)
    return f"""
    () => {{
        setTimeout(() => history.replaceState(null, "", location.pathname + {json.dumps(link)}  // after the tab's own
            + (document.body.classList.contains("present") ? "&present=1" : "")), 300);  // address update
        const target = {json.dumps(target)};
        if (target) setTimeout(() => document.querySelector(target)?.click(), 200);
    }}
    """


def sync_address_js(run_ids: dict[str, str], tab_ids: list[str]) -> str:
    """After the page opened a tab: when the address names another tab (an unknown one, or none), write the open
    tab's id into it; a link that opened its own tab is left exactly as it was typed. With `run=1` the opened tab's
    run button is pressed, once its inputs are filled."""
    return f"""
    () => setTimeout(() => {{  // once the tab bars show the tabs the server opened
        window.hubLinkRead = true;
        const query = new URLSearchParams(location.search);
        const selected = [...document.querySelectorAll('[role=tab][aria-selected=true]')].filter(t => t.offsetParent);
        const tabs = new Set([...{json.dumps(tab_ids)}, {json.dumps(START_HERE)}]);
        const open = selected.map(t => t.dataset.tabId).filter(id => tabs.has(id)).at(-1);  // a demo's, or Start here
        if (query.has("chapter") && !query.has("tab")) return;
        if (open && query.get("tab") !== open)
            history.replaceState(null, "", ({ADDRESS_JS})(open, []));
        const run = {json.dumps(run_ids)}[query.get("tab")];
        if (query.get("run") === "1" && run) setTimeout(() => document.getElementById(run)?.click(), 100);
    }}, 100)
    """
