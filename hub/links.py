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

import gradio as gr
from gradio.components import Component

from hub.checks import check_choice, check_int, check_number, check_text
from hub.errors import HubError

RESERVED = ("tab", "present")  # query parameters the shell reads itself
BOOLEAN_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(("0", "false", "no", "off"), False)

# Every Blocks app keeps its own table {demo id: {parameter name: component}}, filled while its tabs are built.
_LINKED: "weakref.WeakKeyDictionary[gr.Blocks, dict[str, dict[str, Component]]]" = weakref.WeakKeyDictionary()

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


def link_inputs(demo_id: str, **inputs: Component) -> gr.Textbox:
    """Called inside a tab function: `?tab=<demo_id>&<name>=<value>` sets these inputs, and a "Copy link" button
    (placed here) puts the link for their current values in the clipboard and in a box beside it."""
    app = gr.context.Context.root_block
    if app is None:
        raise RuntimeError("link_inputs is called inside a tab, while the app's Blocks are being built")
    _LINKED.setdefault(app, {})[demo_id] = inputs
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


def open_links(app: gr.Blocks, tabs: gr.Tabs, tab_ids: list[str], tab_blocks: list[gr.Tab]) -> None:
    """On page load, open the tab the address names and fill its linked inputs; keep the address bar on the open
    tab as the visitor switches. Called once by build_app, after every tab is built."""
    linked = linked_inputs(app)
    slots = [(demo_id, name, component) for demo_id, inputs in linked.items() for name, component in inputs.items()]

    def open_link(request: gr.Request) -> list:
        query = request.query_params if request else {}
        wanted = query.get("tab")
        updates = [gr.update() for _ in slots]
        if wanted is None:
            return [gr.Tabs(), *updates]
        if wanted not in tab_ids:
            gr.Warning(
                f"There is no tab {wanted!r} in this hub, so the first tab is open. Tabs: {', '.join(tab_ids)}.",
                duration=15,
            )
            return [gr.Tabs(selected=tab_ids[0]), *updates]
        inputs = linked.get(wanted, {})
        problems = [f"{name!r} is not an input of this tab" for name in query if name not in (*RESERVED, *inputs)]
        for i, (demo_id, name, component) in enumerate(slots):
            if demo_id == wanted and name in query:
                try:
                    updates[i] = gr.update(value=read_linked_value(component, name, query[name]))
                except HubError as error:
                    problems.append(str(error))
        if problems:
            gr.Warning(
                f"The link's {'; '.join(problems)} (left as it was; this tab's link inputs: {', '.join(inputs) or 'none'}).",
                duration=15,
            )
        return [gr.Tabs(selected=wanted), *updates]

    app.load(open_link, None, [tabs, *[component for _, _, component in slots]], api_visibility="private").then(
        None, js=sync_address_js(), api_visibility="private"
    )
    for demo_id, tab in zip(tab_ids, tab_blocks):
        # The first tab is selected as the page is drawn, before the link is read: only later switches are written.
        tab.select(
            None,
            js=f"() => {{ if (window.hubLinkRead) history.replaceState(null, '', ({ADDRESS_JS})({json.dumps(demo_id)}, [])); }}",
            api_visibility="private",
        )


def sync_address_js() -> str:
    """After the page opened a tab: when the address names another tab (an unknown one, or none), write the open
    tab's id into it; a link that opened its own tab is left exactly as it was typed."""
    return f"""
    () => setTimeout(() => {{  // once the tab bar shows the tab the server opened
        window.hubLinkRead = true;
        const open = document.querySelector('[role=tab][aria-selected=true]')?.dataset.tabId;
        if (open && new URLSearchParams(location.search).get("tab") !== open)
            history.replaceState(null, "", ({ADDRESS_JS})(open, []));
    }}, 100)
    """
