"""What the app shell needs to know about a demo: one `Demo` per module in `demos/`."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Demo:
    id: str  # used in --demos, --model, ?tab= and the model cache
    title: str  # the tab's label
    default_model: str  # a Hub id (or a library's own model name)
    load: Callable[..., Any]  # load(source, dtype, device) -> the model object the tab uses
    build_tiny: Callable[[Path], None]  # saves a small random-weight model into a folder
    tab: Callable[..., None]  # tab(store) builds the tab's UI inside a gr.Tab
    hub_repos: Callable[[str], list[str]] = lambda source: [source]  # Hub repos a source needs
