"""What review buys in-domain, and what it costs everywhere else (issue 15, "no forgetting").

    python -m benchmarks.review_gain [--quick] [--reviewed 0 100 300 all] [--seeds 0 1] [--epochs 20]
                                     [--variant NAME:key=value,key=value ...] [--work DIR] [--json out.json]

On kitchen20 with fold 5 held out, simulated annotators replace N teacher captions of the
training folds by "the sound of <label>" (an edited review, weight 1), for N = 0, 100, 300 and
all. For every N a fresh student trains (the student_bench recipe, or each `--variant` of it)
and is scored zero-shot (nearest "the sound of <label>") on the held-out fold (in-domain) and on
the whole of the other shared sets (out-of-domain: jt_booth_sounds, medley_solos_small, fsdd),
next to the untrained class-name prior. Reviewed clips are nested (the 100 are among the 300),
drawn by the seed. Labels are used only as these simulated edits and to score.

Variants test the no-forgetting options of training/anchor.py; the recipe has them on by default
(anchor=1, teacher_replay=0.5), so compare with the unregularised training by
    --variant recipe: --variant "plain:anchor=0,teacher_replay=0"
(measured: with every clip reviewed the plain training loses ~10 points out of domain, the
anchored one none, for ~4 points in-domain; README "Review without forgetting").

Teacher captions and content hashes come from (and go to) student_bench's work dir cache.
The last stdout line is a JSON object (the `python -m benchmarks` convention).
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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import student_bench as sb  # noqa: E402

IN_DOMAIN, HELD_FOLD = "kitchen20", "5"
OUT_OF_DOMAIN = ["jt_booth_sounds", "medley_solos_small", "fsdd"]


def folds() -> dict[str, str]:
    rows = csv.DictReader(open(sb.DATA / IN_DOMAIN / "meta.csv", newline="", encoding="utf-8"))
    return {r["filename"]: r["fold"] for r in rows}


def parse_variant(text: str) -> tuple[str, dict]:
    """"name:key=value,key=value" → (name, overrides); values parse as JSON where they can."""
    name, _, rest = text.partition(":")
    out = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return name, out


def review(ws, clip_ids: list[int], labels: dict[int, str]) -> None:
    """Simulated annotators: each clip's caption edited to its label's zero-shot prompt."""
    from training.train import label_prompt
    for cid in clip_ids:
        before = ws.catalog.get_review(cid)
        ws.catalog.save_review(cid, status="edited", expected_version=before.version, annotator="simulated",
                               new_text=label_prompt(labels[cid]))


class Scorer:
    """Zero-shot top-1 on fixed clips; the frozen front end runs once per clip, not once per model."""

    def __init__(self, items: list[sb.Item]):
        from core.store import audio
        from core.models.student import Student, StudentConfig, collate_features, extract_features
        from training.evaluate import clean_label
        cfg = StudentConfig()
        self.labels = [clean_label(it.label) for it in items]
        self.classes = sorted(set(self.labels))
        feats = []
        for i in range(0, len(items), 32):
            waves = [audio.decode(it.path)[0] for it in items[i:i + 32]]
            feats += extract_features(waves, cfg.patch_hop, quiet_gain=cfg.quiet_gain, embeddings=cfg.tagger_embeddings,
                                      words=cfg.words)
        self.batches = [collate_features(feats[i:i + 64]) for i in range(0, len(feats), 64)]
        self._student = Student

    def __call__(self, model) -> float:
        import torch
        from core.pipeline import metrics
        from core.models.zero_shot import classifier
        model.eval()
        with torch.no_grad():
            emb = np.concatenate([model.forward_audio(**b).numpy() for b in self.batches])
        cls = classifier(model, self.classes)
        truth = [self.classes.index(lb) for lb in self.labels]
        return round(float(np.mean(metrics.zero_shot_predictions(emb, cls, truth) == np.asarray(truth))), 4)


def run(args) -> dict:
    import torch
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from core.models.student import Student
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    fold_of = folds()
    items = sb.load_items(work)
    k20 = [it for it in items if it.set == IN_DOMAIN]
    test = [it for it in k20 if fold_of[it.filename] == HELD_FOLD]
    test_sha = {it.sha for it in test}
    train = list({it.sha: it for it in k20 if fold_of[it.filename] != HELD_FOLD and it.sha not in test_sha}.values())
    ood = {name: [it for it in items if it.set == name] for name in OUT_OF_DOMAIN}
    rng = random.Random(0)
    if args.quick:           # a smoke test: small slices, one epoch
        train, test = rng.sample(train, 60), rng.sample(test, 30)
        ood = {name: rng.sample(v, min(20, len(v))) for name, v in ood.items()}
    captions = sb.caption_items(train, work)
    t0 = time.time()
    scorers = {"in_domain": Scorer(test)} | {name: Scorer(v) for name, v in ood.items()}
    print(f"features of {len(test)} + {sum(map(len, ood.values()))} scoring clips in {time.time() - t0:.0f} s",
          file=sys.stderr, flush=True)

    def scores(model) -> dict:
        row = {name: s(model) for name, s in scorers.items()}
        row["ood_mean"] = round(float(np.mean([row[n] for n in ood])), 4)
        return row

    report = {"bench": "review_gain", "train_clips": len(train), "test_clips": len(test),
              "ood_clips": {n: len(v) for n, v in ood.items()}, "prior": scores(Student()), "runs": []}
    variants = [parse_variant(v) for v in args.variant] or [("recipe", {})]
    epochs = 1 if args.quick else args.epochs
    for seed in args.seeds:
        ws = sb.build_workspace(work / f"ws-review-{seed}", train, captions, work / "features")
        clip_label = {c.id: ws.catalog.get_recording(c.recording_id).meta.get("label") for c in ws.catalog.clips()}
        order = sorted(clip_label)
        random.Random(seed).shuffle(order)
        done = 0
        for n in args.reviewed:
            target = len(order) if n == "all" else min(int(n), len(order))
            review(ws, order[done:target], clip_label)
            done = target
            for name, over in variants:
                config = dict(sb.SHIPPED_CONFIG, epochs=epochs, seed=seed) | over
                t1 = time.time()
                result = sb.train_student(ws, config, quiet=True)
                row = {"variant": name, "seed": seed, "reviewed": n, "reviewed_clips": done,
                       "train_seconds": round(time.time() - t1, 1)} | scores(Student.load(result.model_path))
                report["runs"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    report["config"] = dict(sb.SHIPPED_CONFIG, epochs=epochs)
    report["variants"] = dict(variants)
    return report


def table(report: dict) -> str:
    """Mean over seeds per (variant, reviewed), with the spread (max − min) when there are several."""
    cols = ["in_domain"] + OUT_OF_DOMAIN + ["ood_mean"]
    head = ["variant", "reviewed"] + [c.replace("_sounds", "").replace("_solos_small", "") for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    p = report["prior"]
    lines.append("| untrained prior | – | " + " | ".join(f"{100 * p[c]:.1f}" for c in cols) + " |")
    groups: dict[tuple, list[dict]] = {}
    for r in report["runs"]:
        groups.setdefault((r["variant"], str(r["reviewed"])), []).append(r)
    for (variant, n), rows in groups.items():
        cells = []
        for c in cols:
            v = [100 * r[c] for r in rows]
            cells.append(f"{np.mean(v):.1f}" + (f" ±{(max(v) - min(v)) / 2:.1f}" if len(v) > 1 else ""))
        lines.append(f"| {variant} | {n} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in report["runs"]})
    return "\n".join(lines) + f"\n(zero-shot top-1 %, seeds {seeds}; ± is half the range over seeds)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 60 training clips, 1 epoch, N = 0 and all")
    parser.add_argument("--reviewed", nargs="*", default=None, help="numbers of reviewed clips, or 'all'")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=sb.SHIPPED_CONFIG["epochs"])
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:key=value,... a training-config variant (repeatable); default: the recipe")
    parser.add_argument("--work", type=Path, default=sb.DEFAULT_WORK)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.reviewed is None:
        args.reviewed = ["0", "all"] if args.quick else ["0", "100", "300", "all"]
    report = run(args)
    print(table(report), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
