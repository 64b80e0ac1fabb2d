"""Did training help? A finished run's model against the active model, on data neither saw in training.

The held-out set is the run's own validation split, rebuilt from the catalogue exactly as the run
built it (same data settings, fraction and seed from its config.json; the split hashes recordings,
so it is stable as the catalogue grows). Both models answer the same text→audio queries there (each
distinct caption; R@1 and R@5) and, where the clips carry dataset labels, zero-shot classification.
An optional labelled folder (training/evaluate.py `load_folder`) adds zero-shot top-1 and R@5 on it.
A handful of held-out pairs proves nothing, and the result says so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from core.store.workspace import Workspace
from training import data as D
from training import evaluate as ev
from training.train import TrainConfig

MIN_PAIRS = 30                        # below this, a difference of one clip swings R@1 by several points
HELD_OUT, FOLDER_METRICS = ("t2a_r1", "t2a_r5", "zero_shot_acc"), ("zero_shot_acc", "t2a_r5")
METRIC_NAMES = {"t2a_r1": "text→audio R@1", "t2a_r5": "text→audio R@5", "zero_shot_acc": "zero-shot top-1"}
SPLIT_KEYS = ("unreviewed_weight", "import_weight", "sources", "min_confidence", "val_fraction", "seed")
Progress = Callable[[int, int, str], None]


class CompareError(ValueError):
    """Nothing to compare: the run has no model yet, or the folder holds no labelled audio."""


def run_config(ws: Workspace, run_id: int) -> TrainConfig:
    """The settings the run trained with: its folder's config.json (what train.py wrote), else the catalogue's."""
    run = ws.catalog.get_run(run_id)
    path = Path(run.dir) / "config.json" if run.dir else None
    values = json.loads(path.read_text()) if path is not None and path.is_file() else dict(run.config)
    known = TrainConfig().to_dict()
    return TrainConfig.from_dict({k: v for k, v in values.items() if k in known})


def held_out_pairs(ws: Workspace, cfg: TrainConfig) -> list[D.Pair]:
    """The validation pairs of a run with these settings (training/train.py builds them the same way)."""
    pairs = D.collect_pairs(ws, unreviewed_weight=cfg.unreviewed_weight, import_weight=cfg.import_weight,
                            sources=cfg.sources or None, min_confidence=cfg.min_confidence)
    return D.split_by_recording(pairs, cfg.val_fraction, cfg.seed)[1]


def held_out_set(ws: Workspace, pairs: list[D.Pair]) -> ev.EvalSet:
    items = [ev.EvalItem(f"clip {p.clip_id}", ev.clean_label(p.label) if p.label else None, p.caption,
                         (lambda clip_id=p.clip_id: ws.load_clip(clip_id))) for p in pairs]
    return ev.EvalSet("held-out", items, ev._fingerprint([(p.key, "", p.label or "", p.caption) for p in pairs]))


def registered_model(ws: Workspace, run_id: int) -> str:
    try:
        run = ws.catalog.get_run(run_id)
    except KeyError:
        raise CompareError(f"There is no run {run_id}.") from None
    if run.model_id:
        return run.model_id
    why = {"running": "is still running: compare once it has finished",
           "queued": "has not started yet",
           "failed": "failed before registering a model" + (f" ({run.error})" if run.error else ""),
           "cancelled": "was cancelled, so it registered no model (resume it to finish)"}
    raise CompareError(f"Run {run_id} {why.get(run.status, 'has no registered model yet')}.")


def _split_note(ws: Workspace, active_id: str, cfg: TrainConfig) -> str | None:
    """The active model may have trained on this held-out set if its run split the data differently."""
    try:
        record = ws.catalog.get_model(active_id)
    except KeyError:
        return None
    if record.run_id is None:
        return None
    try:
        other = run_config(ws, record.run_id)
    except (KeyError, OSError, ValueError):
        return None
    if any(getattr(other, k) != getattr(cfg, k) for k in SPLIT_KEYS):
        return (f"The active model comes from run {record.run_id}, which split the data differently: "
                "some of these held-out clips may be in its training data, which flatters it.")
    return None


def _rows(set_name: str, metric_keys, new: ev.EvalResult, active: ev.EvalResult) -> list[dict]:
    rows = []
    for key in metric_keys:
        a, n = getattr(active, key), getattr(new, key)
        if a is None and n is None:
            continue
        delta = None if a is None or n is None else round(n - a, 4)
        rows.append({"set": set_name, "metric": METRIC_NAMES[key], "new": n, "active": a, "delta": delta})
    return rows


def compare_run(ws: Workspace, run_id: int, folder: str | Path | None = None, *,
                progress: Progress | None = None) -> dict:
    """The run's registered model vs the active model: rows (set, metric, new, active, delta), the held-out
    size `pairs`, and `warning` when that is too small to mean anything. Raises CompareError (a ValueError)."""
    new_id = registered_model(ws, run_id)
    cfg = run_config(ws, run_id)
    pairs = held_out_pairs(ws, cfg)
    folder_set = None
    if folder is not None and str(folder).strip():
        try:
            folder_set = ev.load_folder(str(folder).strip())
        except (OSError, ValueError) as exc:
            raise CompareError(f"Cannot compare on {folder}: {exc}") from None
        if not folder_set.labelled:
            raise CompareError(f"{folder} has no labelled audio (meta.csv needs a label column, "
                               "or put the clips in one sub-folder per label)")
    new_model = ev.resolve_model(new_id, ws)
    active_model = ev.resolve_model("active", ws)
    active_id = getattr(active_model, "model_id", "active")

    jobs = ([("held-out", held_out_set(ws, pairs), HELD_OUT)] if pairs else []) + \
        ([(folder_set.name, folder_set, FOLDER_METRICS)] if folder_set else [])
    steps = [(name, data, keys, who, model) for name, data, keys in jobs
             for who, model in (("new", new_model), ("active", active_model))]
    results: dict[tuple[str, str], ev.EvalResult] = {}
    grand_total, offset = sum(len(data.items) for _, data, *_ in steps), 0    # one bar over every clip embedded
    for name, data, keys, who, model in steps:
        def step(done: int, total: int, what: str, offset=offset, name=name, who=who) -> None:
            if progress:
                progress(offset + done, grand_total, f"{who} model on {name}: {what}")
        results[name, who] = ev.evaluate(model, data, name=who, progress=step)
        offset += len(data.items)
    rows = []
    for name, data, keys in jobs:
        if name == "held-out":      # zero-shot needs two classes or more: one class is always right
            keys = [k for k in keys if k != "zero_shot_acc" or len(results[name, "new"].classes) >= 2]
        rows += _rows(name, keys, results[name, "new"], results[name, "active"])

    warning = None
    if len(pairs) < MIN_PAIRS:
        warning = (f"only {len(pairs)} held-out pairs: these numbers are noise; "
                   "pick a labelled folder to compare on")
    return {"run": run_id, "new_model": new_id, "active_model": active_id, "already_active": new_id == active_id,
            "pairs": len(pairs), "recordings": len({p.recording_id for p in pairs}),
            "rows": rows, "warning": warning, "note": _split_note(ws, active_id, cfg),
            "failed": [f for r in results.values() for f in r.failed]}
