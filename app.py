"""Hearsay: build the Gradio Blocks app from the tabs in ui/ and launch it.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace DIR] [--no-seed]
"""
from __future__ import annotations

import argparse
import importlib
import os
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # every model here is packaged; never reach for a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from core.settings import load_settings  # noqa: E402
from ui.state import AppState  # noqa: E402

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


def build_app(state: AppState | None = None) -> gr.Blocks:
    state = state or AppState()
    with gr.Blocks(title="Hearsay", fill_width=True) as demo:
        gr.Markdown("# Hearsay\nTurn unlabelled audio into text-to-sound search: "
                    "import → caption → review → train → search.")
        for label, module_name, todo in TABS:
            with gr.Tab(label, id=label.lower()):
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError as exc:
                    if exc.name != module_name:
                        raise
                    gr.Markdown(f"*Coming soon.* {todo}")
                    continue
                module.build(state)
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


def seed_in_background(state: AppState) -> threading.Thread:
    """Import the demo clips into an empty workspace without blocking the first page."""
    from core.importer import seed_demo

    thread = threading.Thread(target=seed_demo, args=(state.ws,), daemon=True, name="seed-demo")
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Hearsay app.")
    parser.add_argument("--host", default=os.environ.get("HEARSAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("HEARSAY_PORT", 7860)))
    parser.add_argument("--workspace", help="workspace folder (default: $HEARSAY_WORKSPACE or ./workspace)")
    parser.add_argument("--no-seed", action="store_true", help="do not import the demo clips into an empty workspace")
    args = parser.parse_args(argv)
    settings = load_settings(workspace=args.workspace)
    state = AppState(settings)
    if settings.seed_demo and not args.no_seed:
        seed_in_background(state).join()   # seconds for ~100 clips; tabs then open on real data
    demo = build_app(state)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=args.host, server_port=args.port, head=head_html(),
                max_file_size=f"{int(settings.max_upload_mb)}mb", allowed_paths=[str(state.ws.root)],
                show_error=True)


if __name__ == "__main__":
    main()
