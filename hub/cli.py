"""The command line: `python -m hub [run|prefetch|list] [options]`. Heavy libraries load only after the
offline setting is applied, because the Hub libraries read it when they are imported, and only after every
setting has been checked, so a mistake is one line on stderr within a second, never a traceback."""

import argparse
import difflib
import errno
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path

from hub.settings import (
    DTYPES,
    Settings,
    apply_offline,
    check_settings,
    hub_is_reachable,
    parse_models,
    settings_from_env,
    split_demo_ids,
)

COMMANDS = {
    "run": "serve the hub (the default)",
    "prefetch": "download every configured model into the local cache, for offline use later",
    "list": "print the demos, their models and whether each is available locally",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def make_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = OneLineParser(
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
        "--mcp",
        action="store_true",
        default=defaults.mcp,
        help="also serve Gradio's MCP server at /gradio_api/mcp/, every public endpoint a tool (HUB_MCP=1)",
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
    """The command and its settings (flags over HUB_* variables); any mistake exits with one line."""
    try:
        defaults = settings_from_env()
    except ValueError as error:
        sys.exit(f"python -m hub: error: {error}")
    parser = make_parser(defaults)
    argv = sys.argv[1:] if argv is None else argv
    check_option_names(parser, argv)
    args = parser.parse_args(argv)
    settings = Settings(
        host=args.host,
        port=args.port,
        demos=split_demo_ids(args.demos) if args.demos is not None else None,
        models=defaults.models,
        preset=args.preset,
        offline=args.offline,
        dtype=args.dtype,
        share=args.share,
        mcp=args.mcp,
        cache_dir=args.cache_dir,
        queue_size=args.queue_size,
        diffusion_concurrency=args.diffusion_concurrency,
        image_budget=args.image_budget,
    )
    try:
        settings.models = {**defaults.models, **parse_models(args.model)}
        check_settings(settings)
    except ValueError as error:
        parser.error(str(error))
    return args.command, settings


def check_option_names(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Name a mistyped option (--prot 7872) before argparse reads its value as the command ("invalid choice")."""
    known = [option for action in parser._actions for option in action.option_strings]
    for arg in argv:
        if arg == "--":
            return
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            parser.error(f"unknown option {name}" + (f"; did you mean {close[0]}?" if close else ""))


def check_cache_dir(folder: Path) -> None:
    """Make sure the cache folder can be written now, not at the first tiny model or upload a minute later."""
    try:
        folder.expanduser().mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder.expanduser()):
            pass
    except OSError as error:
        sys.exit(
            f"python -m hub: error: --cache-dir (HUB_CACHE_DIR) {folder} cannot be written "
            f"({error.strerror or error}); pick a folder this user can write"
        )


def check_port_free(host: str, port: int) -> None:
    """Bind the address once, as the server will, so a port in use is said now and not after a minute of loading."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except socket.gaierror as error:
        sys.exit(f"python -m hub: error: cannot serve on host {host!r} ({error.strerror}); see --host (HUB_HOST)")
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            why = "is in use by another program; pick another with --port (HUB_PORT)"
        elif error.errno == errno.EACCES:
            why = "needs more privileges (ports below 1024); pick another with --port (HUB_PORT)"
        elif error.errno == errno.EADDRNOTAVAIL:
            why = "is not an address of this machine; see --host (HUB_HOST)"
        else:
            why = f"cannot be served ({error.strerror})"
        sys.exit(f"python -m hub: error: {host}:{port} {why}")


def main(argv: list[str] | None = None) -> None:
    try:
        run_command(argv)
    except KeyboardInterrupt:
        sys.exit(130)


def run_command(argv: list[str] | None = None) -> None:
    command, settings = parse_settings(argv)
    if command == "run":
        check_port_free(settings.host, settings.port)
    if command in ("run", "prefetch"):
        check_cache_dir(settings.cache_dir)
    if command == "list":  # reads the light catalog and the local cache: no model library, no network
        apply_offline(True)
        from hub.sources import list_models

        print(list_models(settings))
        return
    if command == "prefetch" and settings.offline:
        print("Offline (--offline, HUB_OFFLINE or HF_HUB_OFFLINE): nothing can be downloaded.", flush=True)
    elif not settings.offline and not hub_is_reachable():
        if command == "prefetch":
            print("The Hugging Face Hub cannot be reached: nothing can be downloaded.", flush=True)
        else:
            print("The Hugging Face Hub cannot be reached: running offline, with the models in the local cache.")
        settings.offline = True
    apply_offline(settings.offline)
    # The hub's own lines at INFO; other libraries (open_clip logs each load to the root logger) only past WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("hub", "demos"):
        logging.getLogger(name).setLevel(logging.INFO)

    from demos import find_demos  # imports the model libraries: after apply_offline

    quiet_libraries()

    demos = find_demos(settings.demos)  # the ids were checked against DEMO_IDS already
    if command == "prefetch":
        sys.exit(prefetch(settings, demos))
    else:
        from hub.app import build_app, launch

        app = build_app(settings)
        # quiet: Gradio's own lines advise `share=True` in launch(); these name the hub's flags instead
        _, local_url, share_url = launch(app, settings, quiet=True, prevent_thread_lock=True)
        print(f"Running on {local_url}", flush=True)
        if share_url:
            print(f"Public link: {share_url}", flush=True)
        else:
            print("For a public link (a gradio.live address for a week), start with --share.", flush=True)
        if settings.mcp:
            print(f"MCP server: {local_url.rstrip('/')}/gradio_api/mcp/", flush=True)
        app.block_thread()


def quiet_libraries() -> None:
    """The model libraries' own warnings about configs they were handed and their weight-loading bars say nothing
    an operator can act on; the hub says what matters in its own lines. Downloads keep their progress bars."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.logging.disable_progress_bar()


def with_models(store) -> list:
    """The demos that load a model, including the ones enabled tabs borrow (the attention tab reads GPT-2's)."""
    return [demo for demo in store.demos.values() if demo.load is not None]


def prefetch(settings: Settings, demos: list) -> int:
    """Load every model once, which makes its library download exactly the files it needs; offline, only say
    which models are already here. One line per model and a summary; 1 when any model is not ready."""
    from hub.models import ModelStore
    from hub.sources import cached_hub_repos

    logging.getLogger("hub.models").setLevel(logging.CRITICAL)  # each failure is reported below, in one line
    store = ModelStore(settings, demos)
    to_fetch = with_models(store)
    cached = cached_hub_repos()
    ready, failed = [], []
    for number, demo in enumerate(to_fetch, 1):
        source = store.source(demo.id)
        where = f"[{number}/{len(to_fetch)}] {demo.id} ({source})"
        if settings.offline and store.status(demo.id, cached) == "no":
            failed.append(demo.id)
            print(f"{where}: not in the local cache, and it cannot be downloaded offline", flush=True)
            continue
        print(f"{where}: loading...", flush=True)
        started = time.monotonic()
        try:
            store.get(demo.id)
        except Exception as error:  # ModelUnavailableError: one line that says why and what to do
            failed.append(demo.id)
            print(f"{where}: FAILED: {error}", flush=True)
            continue
        ready.append(demo.id)
        print(f"{where}: ready ({time.monotonic() - started:.0f} s)", flush=True)
    summary = f"prefetch: {len(ready)} of {len(to_fetch)} models ready"
    print(summary + (f"; not ready: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
