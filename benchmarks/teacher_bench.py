"""Caption the labelled sets in ../shared/data with a teacher; print clips/s and zero-shot accuracy.

    python -m benchmarks.teacher_bench [--teacher embedded] [--sets kitchen20 jt_booth_sounds ...]
                                       [--limit N] [--quick] [--examples 10] [--json out.json]

Quality figure per set: the share of clips whose caption, embedded with the MiniLM text encoder,
is nearest to "the sound of <true label>" among that set's labels (zero-shot accuracy through
captions). Speed: clips/s through `Teacher.caption` in batches, audio decoding excluded.
The last line printed is a JSON summary (for `python -m benchmarks`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_SETS = ["kitchen20", "jt_booth_sounds", "medley_solos_small", "ovos_animals", "fsdd"]


def zero_shot_accuracy(captions: list[str], labels: list[str]) -> float:
    """Share of captions nearest (MiniLM cosine) to their own label's prompt among the set's labels."""
    from core.models.text_encoder import encode
    from core.models.zero_shot import prompt    # the one label → prompt rule (search, evaluation, training)

    classes = sorted(set(labels))
    prompts = encode([prompt(c) for c in classes])
    caps = encode(captions)
    predicted = np.argmax(caps @ prompts.T, axis=1)
    truth = np.array([classes.index(lab) for lab in labels])
    return float(np.mean(predicted == truth)) if len(truth) else 0.0


def load_set(name: str, limit: int | None = None, seed: int = 0) -> tuple[list[str], list[str], list[np.ndarray]]:
    from core.store import audio

    folder = DATA / name
    rows = list(csv.DictReader(open(folder / "meta.csv", newline="", encoding="utf-8")))
    if limit and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    waves = [audio.decode(folder / "audio" / r["filename"])[0] for r in rows]
    return [r["filename"] for r in rows], [r["label"] for r in rows], waves


def run(teacher_name: str, sets: list[str], limit: int | None, batch: int) -> dict:
    from core.models.teachers import get_teacher

    teacher = get_teacher(teacher_name)
    teacher.caption([np.zeros(16000, np.float32) + 1e-3])          # load models before timing
    report = {"teacher": teacher.identity, "prompt": teacher.prompt, "sets": {}}
    for name in sets:
        if not (DATA / name / "meta.csv").is_file():
            print(f"{name}: missing, skipped", file=sys.stderr)
            continue
        files, labels, waves = load_set(name, limit)
        start = time.perf_counter()
        outs = []
        for i in range(0, len(waves), batch):
            outs += teacher.caption(waves[i:i + batch])
        seconds = time.perf_counter() - start
        captions = [o.caption for o in outs]
        report["sets"][name] = {
            "clips": len(waves),
            "audio_seconds": round(sum(len(w) for w in waves) / 16000, 1),
            "clips_per_s": round(len(waves) / seconds, 1),
            "zero_shot_accuracy": round(zero_shot_accuracy(captions, labels), 3),
            "classes": len(set(labels)),
            "examples": [{"file": f, "label": lab, "caption": c} for f, lab, c in zip(files, labels, captions)],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="embedded")
    p.add_argument("--sets", nargs="+", default=DEFAULT_SETS)
    p.add_argument("--limit", type=int, help="clips per set (random sample)")
    p.add_argument("--quick", action="store_true", help="100 clips of each sound-event set, no spoken digits")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--examples", type=int, default=10, help="example captions to print (spread over the sets)")
    p.add_argument("--json", help="write the full report (every caption) here")
    args = p.parse_args(argv)
    if args.quick:
        args.limit = args.limit or 100
        args.sets = [s for s in args.sets if s != "fsdd"]
    report = run(args.teacher, args.sets, args.limit, args.batch)
    print(f"teacher {report['teacher']}  ({report['prompt']})")
    print(f"{'set':22} {'clips':>6} {'audio s':>8} {'clips/s':>8} {'classes':>8} {'zero-shot acc':>14}")
    for name, r in report["sets"].items():
        print(f"{name:22} {r['clips']:6d} {r['audio_seconds']:8.0f} {r['clips_per_s']:8.1f} {r['classes']:8d} "
              f"{100 * r['zero_shot_accuracy']:13.1f}%")
    if args.examples:
        print("\nexamples (true label → caption)")
        rng = random.Random(1)
        pool = [(n, ex) for n, r in report["sets"].items() for ex in r["examples"]]
        for n, ex in rng.sample(pool, min(args.examples, len(pool))):
            print(f"  [{n}] {ex['label']:>26} → {ex['caption']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps({"name": "teacher", "teacher": report["teacher"], **{
        f"{name}_{key}": r[key] for name, r in report["sets"].items() for key in ("clips_per_s", "zero_shot_accuracy")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
