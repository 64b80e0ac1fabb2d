"""Evaluation on the labelled sets in ../shared/data: zero-shot accuracy and retrieval per model.

    python benchmarks/evaluate_bench.py [--models shipped teacher] [--sets kitchen20 ...] [--limit N] [--quick]

Runs `training.evaluate` (the same code as `python -m training evaluate`) for every model on
every set, prints a table and, as its last line, one JSON object: per-model means over the
sets plus every figure under "details". --quick: 60 clips spread over each of three small sets.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ALL_SETS = ["kitchen20", "jt_booth_sounds", "medley_solos_small", "ovos_animals", "fsdd"]
QUICK_SETS = ["jt_booth_sounds", "medley_solos_small", "ovos_animals"]
HEADLINE = ("zero_shot_acc", "t2a_r1", "t2a_r10", "a2t_r1", "map10")


def subset(data, limit: int | None):
    if limit and limit < len(data.items):
        keep = np.unique(np.linspace(0, len(data.items) - 1, limit).round().astype(int))
        data.items = [data.items[i] for i in keep]
    return data


def main(argv: list[str] | None = None) -> int:
    from training import evaluate as ev

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shipped", "teacher"])
    p.add_argument("--sets", nargs="+")
    p.add_argument("--limit", type=int, help="clips per set, spread evenly")
    p.add_argument("--quick", action="store_true", help="60 clips of each of three small sets")
    args = p.parse_args(argv)
    sets = args.sets or (QUICK_SETS if args.quick else ALL_SETS)
    limit = args.limit or (60 if args.quick else None)
    details: dict[str, dict] = {}
    print(f"{'model':10} {'set':20} {'clips':>5} " + " ".join(f"{k:>13}" for k in HEADLINE) + f" {'clips/s':>8}")
    for model_name in args.models:
        try:
            model = ev.resolve_model(model_name)
        except Exception as exc:  # noqa: BLE001 - a missing model is a row, not a crash
            print(f"{model_name:10} unavailable: {exc}")
            details[model_name] = {"error": str(exc)}
            continue
        details[model_name] = {}
        for name in sets:
            data = subset(ev.load_folder(DATA / name), limit)
            started = time.perf_counter()
            r = ev.evaluate(model, data, name=model_name)
            rate = r.clips / max(time.perf_counter() - started, 1e-9)
            details[model_name][name] = {**r.summary(), "clips_per_s": round(rate, 1), "data": name}
            print(f"{model_name:10} {name:20} {r.clips:5d} "
                  + " ".join(f"{'—' if getattr(r, k) is None else f'{100 * getattr(r, k):12.1f}%':>13}"
                             for k in HEADLINE) + f" {rate:8.1f}")
    summary: dict = {"bench": "evaluate", "sets": len(sets), "limit": limit}
    for model_name, per_set in details.items():
        if "error" in per_set:
            summary[f"{model_name}_error"] = per_set["error"][:80]
            continue
        for key in ("zero_shot_acc", "t2a_r10", "map10"):
            values = [s[key] for s in per_set.values() if s[key] is not None]
            summary[f"{model_name}_{key}"] = round(float(np.mean(values)), 4) if values else None
    summary["details"] = details
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
