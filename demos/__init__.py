"""One module per tab: the model it uses, the pure functions that do the work, and the tab that shows them.

Every demo, in tab order: the course's, chapter by chapter (hub/catalog.py CHAPTERS). Adding a demo = one module here, one line in DEMOS and its entry in hub/catalog.py
(the light table the CLI reads for `list` and --demos without importing torch; a test keeps the two equal).
"""

from demos import (
    before_transformers,
    efficient_attention,
    fine_tune,
    scaling_laws,
    text_to_image,
    why_this_prediction,
)
from demos.attention import maps as attention
from demos.clip import tab as clip_zero_shot
from demos.inside import layers_tab, positional_encoding_tab
from demos.language import fill_mask, text_generation_tab
from demos.vision import tab as image_classification
from hub.demo import Demo

DEMOS: list[Demo] = [
    before_transformers.DEMO,
    attention.DEMO,
    layers_tab.DEMO,
    positional_encoding_tab.DEMO,
    text_generation_tab.DEMO,
    fill_mask.DEMO,
    image_classification.DEMO,
    clip_zero_shot.DEMO,
    fine_tune.DEMO,
    text_to_image.DEMO,
    scaling_laws.DEMO,
    efficient_attention.DEMO,
    why_this_prediction.DEMO,
]


def find_demos(ids: list[str] | None) -> list[Demo]:
    """The demos named by --demos, in that order (all of them when ids is None)."""
    if ids is None:
        return list(DEMOS)
    by_id = {demo.id: demo for demo in DEMOS}
    unknown = [demo_id for demo_id in ids if demo_id not in by_id]
    if unknown:
        raise ValueError(f"unknown demo id(s) {', '.join(unknown)}; known: {', '.join(by_id)}")
    return [by_id[demo_id] for demo_id in ids]
