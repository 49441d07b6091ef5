"""The app shell: a title, an intro and one tab per enabled demo. It knows nothing about any one demo."""

import gradio as gr

from demos import find_demos
from hub.event_inputs import HubBlocks
from hub.links import open_links
from hub.models import ModelStore
from hub.presenter import presenter_switch
from hub.settings import Settings

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


def build_app(settings: Settings, store: ModelStore | None = None) -> gr.Blocks:
    demos = find_demos(settings.demos)
    store = store or ModelStore(settings, demos)
    # Files Gradio hands out (images, fine-tuned model zips) are deleted after an hour, so a Space never fills its disk.
    with HubBlocks(title="Transformers demo hub", delete_cache=(1800, 3600)) as app:
        presenter_switch()  # ?present=1 or this switch: large type, the intro and banners folded away
        gr.Markdown(INTRO, elem_id="hub-intro")
        if settings.preset == "tiny":
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner", elem_classes="hub-banner")
        # "wrap": every tab stays in the bar on a projector's narrow screen, never hidden in a "..." menu
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            tab_blocks = []
            for demo in demos:
                with gr.Tab(demo.title, id=demo.id) as tab:
                    demo.tab(store)
                tab_blocks.append(tab)
        # ?tab=<demo id>&<input>=<value> opens that demo with those inputs; the address bar follows the open tab
        open_links(app, tabs, [demo.id for demo in demos], tab_blocks)
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
