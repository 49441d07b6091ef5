"""The hub in a server process of its own, for the benchmarks: `python -m bench.serve_hub SETTINGS_JSON` with
hub.settings.Settings' fields (demos, models, dtype, preset, cache_dir, ...). Loads the listed demos' models, then
prints {"url": ..., "dtype": ...} and serves until it is ended."""

import json
import sys
from pathlib import Path

from bench.common import free_port
from demos import find_demos
from hub.app import build_app, launch
from hub.models import ModelStore
from hub.settings import Settings

if __name__ == "__main__":
    fields = json.loads(sys.argv[1])
    always_make = fields.pop("always_make_every_token", False)
    if "cache_dir" in fields:
        fields["cache_dir"] = Path(fields["cache_dir"])
    settings = Settings(offline=True, **{"port": free_port(), **fields})
    store = ModelStore(settings, find_demos(settings.demos))
    for demo_id in settings.demos or []:
        model = store.get(demo_id)  # loaded before the first request, as a warmed-up server is
        if always_make and demo_id == "text-generation":  # random weights may pick the end-of-text token
            model.model.generation_config.eos_token_id = None
    app = build_app(settings, store)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    print(json.dumps({"url": url, "dtype": str(store.dtype).removeprefix("torch.")}), flush=True)
    sys.stdin.read()  # serves until the benchmark closes this pipe, or ends without closing it
