"""The one command tree (`python -m core COMMAND`, `python -m training COMMAND`) and what its commands share.

Each module in COMMANDS has `register(subparsers)`, adding sub-command(s) with `func(args) -> int` and,
through `set_defaults`, optionally `interrupted` (the line Ctrl-C prints) and `failures` (exception types
that end the command with one `error: ...` line and exit code 2 instead of a traceback). Shared here: the
--workspace option, opening the workspace, a tqdm progress callback and the cancel event Ctrl-C sets.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

COMMANDS = [
    "core.cli.library",      # import, stats
    "core.cli.caption",      # caption
    "core.cli.ops",          # doctor, backup, restore
    "core.cli.search",       # index, search
    "core.cli.review",       # export, import-export, review-stats
    "core.cli.project",      # project (UMAP map as HTML)
    "core.cli.access",       # hash-password, users
    "core.cli.train",        # train
    "core.cli.evaluate",     # evaluate
    "core.cli.export_onnx",  # export-onnx
]
DESCRIPTION = "Hearsay: build text-to-sound search from unlabelled audio."
RERUN = "interrupted: run the same command again to continue"     # for commands that resume where they stopped


def main(argv: list[str] | None = None, *, prog: str = "python -m core", commands: list[str] = COMMANDS,
         description: str = DESCRIPTION) -> int:
    # Idle OpenMP threads sleep instead of spinning: on shared cores spinning made a text query 17× slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--workspace", help="workspace folder (default: $HEARSAY_WORKSPACE or ./workspace)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in commands:
        importlib.import_module(name).register(sub)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """`args.func(args)`, with Ctrl-C, a lost catalogue, a missing model and the command's `failures` as one
    line each."""
    from core.models.registry import ModelUnavailable
    from core.store.catalog import CatalogUnusable
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(getattr(args, "interrupted", "interrupted"), file=sys.stderr)
        return 130
    except getattr(args, "failures", ()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CatalogUnusable as exc:      # a lost or damaged catalogue: one line that says how to recover
        print(exc, file=sys.stderr)
        return 2
    except ModelUnavailable as exc:     # a model name that resolves to nothing here: what to fetch, where
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_workspace(p: argparse.ArgumentParser, help: str = "workspace folder") -> None:
    # Accepted after the sub-command too: `python -m core import X --workspace W`.
    p.add_argument("--workspace", default=argparse.SUPPRESS, help=help)


def workspace_from(args):
    from core.store.workspace import Workspace
    return Workspace(getattr(args, "workspace", None) or None)


def workspace_if_any(args, needed: bool):
    """An explicit --workspace / $HEARSAY_WORKSPACE, else the default one only if it already exists."""
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    root = getattr(args, "workspace", None)
    settings = load_settings()
    if root or needed or settings.workspace.expanduser().is_dir():
        return Workspace(root or settings.workspace, settings)
    return None


def progress_bar(unit: str = "clip", width: int = 40, **tqdm_args) -> tuple[object, Callable[[int, int, str], None]]:
    """A tqdm bar and the `progress(done, total, message)` callback the pipeline functions take."""
    from tqdm import tqdm
    bar = tqdm(unit=unit, **tqdm_args)

    def progress(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message[-width:])
        bar.refresh()
    return bar, progress


@contextmanager
def cancel_on_interrupt(bar=None) -> Iterator[threading.Event]:
    """A cancel event for the pipeline's worker threads, set by Ctrl-C (which goes on up to `run`);
    the bar is closed either way."""
    cancel = threading.Event()
    try:
        yield cancel
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        if bar is not None:
            bar.close()


def add_dataclass_flags(p: argparse.ArgumentParser, cls, dest_prefix: str = "") -> list[str]:
    """One option per field of dataclass `cls` whose metadata has a `help` (as HfArgumentParser does):
    `--field-name` (or metadata `flag`), typed by the default, `choices` and `metavar` from the metadata,
    default None so that only what was given overrides a config file. Returns the dests."""
    dests = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind = type(f.default)
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        p.add_argument(flag, dest=dest_prefix + f.name, type=kind, default=None, choices=f.metadata.get("choices"),
                       metavar=f.metadata.get("metavar"), help=f"{f.metadata['help']} (default {f.default!r})")
        dests.append(dest_prefix + f.name)
    return dests


def command(sub, name: str, *, func: Callable, workspace: str | None = "workspace folder", json: str | None = None,
            **options) -> argparse.ArgumentParser:
    """A sub-command running `func(args)`: with --workspace (unless workspace=None), --json when `json` is its
    help, and `interrupted` / `failures` for `run`; the rest goes to `add_parser` (help, description, ...)."""
    extra = {k: options.pop(k) for k in ("interrupted", "failures") if k in options}
    p = sub.add_parser(name, **options)
    if workspace:
        add_workspace(p, workspace)
    if json:
        p.add_argument("--json", action="store_true", help=json)
    p.set_defaults(func=func, **extra)
    return p
