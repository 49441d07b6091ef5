"""The app shell: a title, an intro, a word on which models are here, and one tab per enabled demo, titled with the
model it loads. It knows nothing about any one demo."""

import logging
import os
import re
from pathlib import Path

import gradio as gr

from demos import find_demos
from hub.catalog import chapters_of
from hub.demo import Demo
from hub.event_inputs import HubBlocks
from hub.links import ChapterTabs, open_links
from hub.models import ModelStore
from hub.presenter import presenter_switch
from hub.settings import Settings
from hub.sources import READY, cached_hub_repos, is_local
from hub.start_here import START_HERE, guide_steps, start_here_tab

log = logging.getLogger(__name__)

INTRO = """
# Transformers demo hub
See transformers work: GPT-2 writes, BERT fills in blanks, a Vision Transformer names what is in a photo,
CLIP matches images to any words you type, a small model is fine-tuned live, and a diffusion model draws from
a prompt. Each tab also shows what the model did inside and the few lines of library code that reproduce it.
"""

TINY_BANNER = """
> **Tiny preset:** every model here is a small network with *random weights*, built on this machine. The tabs work,
> but their outputs are meaningless. Start without `--preset tiny` to use the real models.
"""


# ---------------------------------------------------------------------------------------------------------
# Tab titles: the model actually loaded


def model_name(source: str) -> str:
    """How a tab title names a model source: a local folder by its name, anything else as typed (an open_clip
    "name/tag" and a Hub "org/repo" cannot be told apart here, and both halves matter)."""
    source = source.removeprefix("hf-hub:").removeprefix("local-dir:")
    return Path(source).expanduser().resolve().name if is_local(source) else source


def tab_title(demo: Demo, store: ModelStore) -> str:
    """The demo's title naming the model its tab loads: "Text generation (GPT-2)" for the default model,
    "Text generation (distilgpt2)" with --model text-generation=distilgpt2, "(tiny GPT-2)" in the tiny preset."""
    named = re.fullmatch(r"(.*) \((.*)\)", demo.title)
    if demo.load is None or named is None:  # a tab over other tabs' models (Attention) keeps its title
        return demo.title
    base, default_name = named.groups()
    if store.builds_tiny(demo.id):
        return f"{base} (tiny {default_name})"
    source = store.source(demo.id)
    return demo.title if source == demo.default_model else f"{base} ({model_name(source)})"


# ---------------------------------------------------------------------------------------------------------
# Which models are here: said at start-up, so no tab looks usable and then fails on the first click

# A model's state at start-up: "ready" (no network needed), "download" (on first use), "offline", "missing".
WORST_FIRST = ("missing", "offline", "download", "ready")
STATE_LOG = {
    "ready": "on this machine",
    "download": "not on this machine: downloaded from the Hugging Face Hub on first use",
    "offline": "not on this machine and the hub is offline: its tabs cannot work",
    "missing": "a local folder that does not exist: its tabs cannot work",
}
FIX = "run `python -m hub prefetch` while online, or start with `--preset tiny`"


def hub_is_offline(settings: Settings) -> bool:
    """--offline, HUB_OFFLINE or HF_HUB_OFFLINE, or set by the CLI when the Hub did not answer at start-up."""
    return settings.offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_states(store: ModelStore, offline: bool) -> dict[str, str]:
    """Each loadable model's state (see WORST_FIRST), read from the local folders and the Hugging Face cache."""
    cached = cached_hub_repos()
    states = {}
    for demo in store.demos.values():
        if demo.load is None:
            continue
        status = store.status(demo.id, cached)
        if status in READY:
            states[demo.id] = "ready"
        elif status == "MISSING":
            states[demo.id] = "missing"
        else:
            states[demo.id] = "offline" if offline else "download"
    return states


def tab_models(demo: Demo) -> list[str]:
    """The demo ids whose models a tab loads: its own and those it reads from other demos."""
    return ([demo.id] if demo.load is not None else []) + [used.id for used in demo.uses]


def tab_state(demo: Demo, states: dict[str, str]) -> str:
    return min((states[m] for m in tab_models(demo)), key=WORST_FIRST.index, default="ready")


def works_in_part(demo: Demo, states: dict[str, str]) -> bool:
    """A tab over several models (Attention: GPT-2, BERT, MiniLM) still works with the ones that are here."""
    return any(states[m] in ("ready", "download") for m in tab_models(demo))


def tab_notice(demo: Demo, store: ModelStore, states: dict[str, str]) -> str | None:
    """The note at the top of a tab whose models are not all on this machine; None when they are."""
    waiting = [m for m in tab_models(demo) if states[m] != "ready"]
    if not waiting:
        return None

    def named(models: list[str]) -> str:  # a tab over other tabs' models also says whose model each is
        return ", ".join(f"`{store.source(m)}`" + ("" if m == demo.id else f" ({m})") for m in models)

    by_state = {state: [m for m in waiting if states[m] == state] for state in WORST_FIRST}
    lines = []
    if by_state["download"]:
        lines.append(
            f"{named(by_state['download'])}: not on this machine yet; the first request waits while it downloads."
        )
    if by_state["offline"]:
        lines.append(f"{named(by_state['offline'])}: not in the local cache, and the hub is offline; {FIX}.")
    if by_state["missing"]:
        lines.append(f"{named(by_state['missing'])}: this folder does not exist (see --model).")
    if tab_state(demo, states) == "download":
        heading = "Downloads on first use"
    else:
        heading = "Part of this tab cannot work now" if works_in_part(demo, states) else "This tab cannot work now"
    return f"> **{heading}:** " + " ".join(lines)


def models_banner(titles: dict[str, str], demos: list[Demo], states: dict[str, str]) -> str:
    """One paragraph at the top of the page: which tabs have their models here, which download, which cannot."""
    groups = {state: [] for state in WORST_FIRST}
    for demo in demos:
        state = tab_state(demo, states)
        in_part = state in ("offline", "missing") and works_in_part(demo, states)
        groups[state].append(titles[demo.id] + (" (in part)" if in_part else ""))
    said = {
        "ready": "Ready on this machine: {}.",
        "download": "Downloaded from the Hugging Face Hub on first use (the first request waits for it): {}.",
        "offline": "Cannot work, the hub being offline and their models not in the local cache: {}; " + FIX + ".",
        "missing": "Cannot work, their model folder does not exist: {}.",
    }
    parts = [said[state].format(", ".join(groups[state])) for state in reversed(WORST_FIRST) if groups[state]]
    return "> **Models.** " + " ".join(parts)


def log_model_states(store: ModelStore, states: dict[str, str]) -> None:
    for demo_id, state in states.items():
        log.info("model of %s: %s, %s", demo_id, store.source(demo_id), STATE_LOG[state])


# ---------------------------------------------------------------------------------------------------------
# The app


def build_app(settings: Settings, store: ModelStore | None = None) -> gr.Blocks:
    demos = find_demos(settings.demos)
    by_id = {demo.id: demo for demo in demos}
    store = store or ModelStore(settings, demos)
    states = model_states(store, hub_is_offline(settings))
    log_model_states(store, states)
    titles = {demo.id: tab_title(demo, store) for demo in demos}
    all_here = all(state == "ready" for state in states.values())
    # Files Gradio hands out (images, fine-tuned model zips) are deleted after an hour, so a Space never fills its disk.
    with HubBlocks(title="Transformers demo hub", delete_cache=(1800, 3600)) as app:
        presenter_switch()  # ?present=1 or this switch: large type, the intro and banners folded away
        gr.Markdown(INTRO, elem_id="hub-intro")
        if settings.preset == "tiny":
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner", elem_classes="hub-banner")
        if settings.preset != "tiny" or not all_here:
            gr.Markdown(models_banner(titles, demos, states), elem_id="models-banner", elem_classes="hub-banner")
        # Chapters in the course's order, each a row of its tabs. "wrap": every tab stays in its bar on a projector's
        # narrow screen, never hidden in a "..." menu.
        with gr.Tabs(overflow_behavior="wrap", elem_id="chapters") as chapter_tabs:
            with gr.Tab("Start here", id=START_HERE, elem_id="start-here-tab"):
                guide = start_here_tab(guide_steps(list(by_id)), states, titles)
            chapters = []
            for number, (chapter, demo_ids) in enumerate(chapters_of([demo.id for demo in demos]), 1):
                with gr.Tab(f"{number}. {chapter.title}", id=f"chapter-{chapter.id}") as chapter_tab:
                    with gr.Tabs(overflow_behavior="wrap", elem_classes="demo-tabs") as demo_tabs:
                        demo_blocks = []
                        for demo in (by_id[demo_id] for demo_id in demo_ids):
                            with gr.Tab(titles[demo.id], id=demo.id) as tab:
                                if notice := tab_notice(demo, store, states):
                                    gr.Markdown(notice, elem_id=f"model-notice-{demo.id}", elem_classes="hub-banner")
                                demo.tab(store)
                            demo_blocks.append(tab)
                chapters.append(ChapterTabs(chapter.id, chapter_tab, demo_tabs, demo_ids, demo_blocks))
        # ?tab=<demo id>&<input>=<value> opens that demo with those inputs (?chapter=<id>, a chapter); the address bar
        # follows the open tab; Start here's buttons open their views the same way
        open_links(app, chapter_tabs, chapters, guide)
    app.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return app


def launch(app: gr.Blocks, settings: Settings, **kwargs) -> tuple:
    return app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        show_error=False,  # unexpected errors reach visitors as a short message, never a traceback
        max_file_size=f"{settings.max_file_mb}mb",
        theme="soft",
        mcp_server=settings.mcp,  # --mcp: every public endpoint also an MCP tool, at /gradio_api/mcp/
        **kwargs,
    )
