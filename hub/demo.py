"""What the app shell needs to know about a demo: one `Demo` per module in `demos/`. hub/catalog.py repeats each
demo's id, title, default model and the Hub repos it needs, for the CLI that answers before torch loads; a test in
tests/test_cli.py keeps the two equal."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Demo:
    id: str  # used in --demos, --model, ?tab= and the model cache
    title: str  # the tab's label
    default_model: str  # a Hub id (or a library's own model name)
    # load(source, dtype, device) -> the model object the tab uses; None = the tab reads only the models in `uses`
    load: Callable[..., Any] | None
    # Saves a small random-weight model into a folder; None = the model is small and ships in a package,
    # so --preset tiny uses the real one.
    build_tiny: Callable[[Path], None] | None
    tab: Callable[..., None] | None  # tab(store) builds the tab's UI inside a gr.Tab; None = a model other tabs read
    hub_repos: Callable[[str], list[str]] = lambda source: [source]  # Hub repos a source needs
    uses: tuple["Demo", ...] = ()  # other demos whose loaded models this tab reads (shared, never loaded twice)
