"""The command line: `python -m hub [run|prefetch|list] [options]`. Heavy libraries load only after the
offline setting is applied, because the Hub libraries read it when they are imported."""

import argparse
import logging
import sys
from pathlib import Path

from hub.settings import DTYPES, Settings, apply_offline, hub_is_reachable, parse_models, settings_from_env

COMMANDS = {
    "run": "serve the hub (the default)",
    "prefetch": "download every configured model into the local cache, for offline use later",
    "list": "print the demos, their models and whether each is available locally",
}


def make_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hub",
        description="Transformers demo hub: one Gradio tab per transformer demo.",
        epilog="Every option can also be set by an environment variable (in brackets), e.g. on a Hugging Face Space.",
    )
    commands = "; ".join(f"{name}: {text}" for name, text in COMMANDS.items())
    parser.add_argument("command", nargs="?", default="run", choices=list(COMMANDS), help=commands)
    parser.add_argument("--host", default=defaults.host, help="address to serve on (HUB_HOST) [%(default)s]")
    parser.add_argument("--port", type=int, default=defaults.port, help="port to serve on (HUB_PORT) [%(default)s]")
    parser.add_argument(
        "--demos",
        default=",".join(defaults.demos) if defaults.demos else None,
        help="comma-separated demo ids to enable, in tab order (HUB_DEMOS) [all]",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="DEMO=ID_OR_DIR",
        help="use another model for a demo: a Hub id or a local folder saved by its library; repeatable "
        "(HUB_MODELS='demo=id;demo=id')",
    )
    parser.add_argument(
        "--preset",
        choices=["tiny"],
        default=defaults.preset,
        help="tiny: small random-weight models built locally with no network; outputs are meaningless "
        "(for tests, CI and trying the UI offline) (HUB_PRESET)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        default=defaults.offline,
        help="never touch the network; models must be in the local cache (HUB_OFFLINE=1)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=defaults.dtype,
        help="number format of the models: auto picks bfloat16 where this machine runs it faster (HUB_DTYPE) "
        "[%(default)s]",
    )
    parser.add_argument(
        "--share",
        action="store_true",
        default=defaults.share,
        help="also serve on a public gradio.live link (HUB_SHARE=1)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=defaults.cache_dir,
        help="where tiny models and other hub files are kept (HUB_CACHE_DIR) [%(default)s]",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=defaults.queue_size,
        help="requests that may wait; more get 'queue is full' (HUB_QUEUE_SIZE) [%(default)s]",
    )
    parser.add_argument(
        "--diffusion-concurrency",
        type=int,
        default=defaults.diffusion_concurrency,
        help="text-to-image generations that may run at once (HUB_DIFFUSION_CONCURRENCY) [%(default)s]",
    )
    parser.add_argument(
        "--image-budget",
        type=float,
        default=defaults.image_budget,
        help="most a text-to-image request may cost, in steps of one 512x512 image (HUB_IMAGE_BUDGET) [%(default)s]",
    )
    return parser


def parse_settings(argv: list[str] | None = None) -> tuple[str, Settings]:
    defaults = settings_from_env()
    parser = make_parser(defaults)
    args = parser.parse_args(argv)
    settings = Settings(
        host=args.host,
        port=args.port,
        demos=[d.strip() for d in args.demos.split(",") if d.strip()] if args.demos else None,
        models=defaults.models,
        preset=args.preset,
        offline=args.offline,
        dtype=args.dtype,
        share=args.share,
        cache_dir=args.cache_dir,
        queue_size=args.queue_size,
        diffusion_concurrency=args.diffusion_concurrency,
        image_budget=args.image_budget,
    )
    try:
        settings.models = {**defaults.models, **parse_models(args.model)}
    except ValueError as error:
        parser.error(str(error))
    return args.command, settings


def main(argv: list[str] | None = None) -> None:
    command, settings = parse_settings(argv)
    if not settings.offline and command != "prefetch" and not hub_is_reachable():
        print("The Hugging Face Hub cannot be reached: running offline, with the models in the local cache.")
        settings.offline = True
    apply_offline(settings.offline)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from demos import find_demos  # imports the model libraries: after apply_offline

    try:
        demos = find_demos(settings.demos)
        unknown = sorted(set(settings.models) - {demo.id for demo in demos})
        if unknown:
            raise ValueError(f"--model names demo(s) that are not enabled: {', '.join(unknown)}")
    except ValueError as error:
        sys.exit(f"error: {error}")

    if command == "list":
        list_models(settings, demos)
    elif command == "prefetch":
        sys.exit(prefetch(settings, demos))
    else:
        from hub.app import build_app, launch

        launch(build_app(settings), settings)


def list_models(settings: Settings, demos: list) -> None:
    from hub.models import ModelStore, is_local, tiny_model_is_built

    store = ModelStore(settings, demos)
    cached = cached_hub_repos()
    print(f"{'demo':<22}{'available':<11}model")
    for demo in with_models(store):
        source = store.source(demo.id)
        if settings.preset == "tiny" and demo.id not in settings.models and demo.build_tiny:
            available = "built" if tiny_model_is_built(Path(source)) else "on use"
        elif is_local(source):
            available = "yes" if Path(source).expanduser().exists() else "MISSING"
        else:
            available = "yes" if all(repo in cached for repo in demo.hub_repos(source)) else "no"
        print(f"{demo.id:<22}{available:<11}{source}")


def with_models(store) -> list:
    """The demos that load a model, including the ones enabled tabs borrow (the attention tab reads GPT-2's)."""
    return [demo for demo in store.demos.values() if demo.load is not None]


def cached_hub_repos() -> set[str]:
    from huggingface_hub import scan_cache_dir

    try:
        return {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet
        return set()


def prefetch(settings: Settings, demos: list) -> int:
    """Load every model once, which makes its library download exactly the files it needs."""
    from hub.models import ModelStore

    store = ModelStore(settings, demos)
    failures = 0
    for demo in with_models(store):
        print(f"{demo.id}: {store.source(demo.id)} ...", flush=True)
        try:
            store.get(demo.id)
            print(f"{demo.id}: ready")
        except Exception as error:
            failures += 1
            print(f"{demo.id}: FAILED: {error}")
    return 1 if failures else 0
