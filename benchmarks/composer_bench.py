"""How the embedded teacher's wording moves its captions' zero-shot accuracy, in seconds (issue 15).

    python -m benchmarks.composer_bench [--quick] [--variant NAME ...] [--write-captions NAME]
                                        [--work DIR] [--json out.json]

The slow half of the embedded teacher (tagger, descriptors, Whisper) runs once per clip of the four
shared sets and is cached in <work>/composer_scenes.npz (per-patch AudioSet probabilities) and
<work>/composer_scenes.json (descriptors, transcript, wording seed; no pickle). Each variant then
re-composes every caption (core/models/teachers/composer.py with some of its module-level knobs
patched for the run) and scores the captions zero-shot against the class names, as student_bench's
"teacher captions" column does: `shipped` reproduces that column exactly.

--write-captions NAME writes <work>/captions-NAME.jsonl in student_bench's caption-cache format, keyed
as the shipped teacher's captions are, so a student can train on a variant's wording without a new
composer version: copy it to DIR2/teacher_captions.jsonl and run
`python -m benchmarks.student_bench --protocols loso --work DIR2`.

The last stdout line is a JSON object (the `python -m benchmarks` convention).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import bench_sets as bs  # noqa: E402
from core.models.teachers import composer  # noqa: E402

COUNT_WORDS = ("repeatedly", "several times", "again and again", "twice", "two times")
_timing = composer.timing


def _counts_only(ev, desc, rng, main):
    said = _timing(ev, desc, rng, main)
    return said if said in COUNT_WORDS else ""


def _silent(*args, **kwargs) -> str:
    return ""


# name → composer attributes to patch for the run (what each one asks is in its name)
VARIANTS: dict[str, dict] = {
    "shipped": {},
    "no-timing": {"timing": _silent},
    "no-timing-no-loudness": {"timing": _silent, "loudness_word": _silent},
    "counts-only": {"timing": _counts_only},
    "main-event-only": {"SECOND_RATIO": float("inf")},
    "second-ratio-0.1": {"SECOND_RATIO": 0.1},
    "second-ratio-0.4": {"SECOND_RATIO": 0.4},
    "min-event-0.05": {"MIN_EVENT": 0.05},
    "min-event-0.15": {"MIN_EVENT": 0.15},
}


# -- the cached scenes -------------------------------------------------------------------------------------
def save_scenes(path: Path, scenes: dict[str, tuple[int, composer.Scene]]) -> None:
    np.savez(path.with_suffix(".npz"), **{sha: s.patch_probs.astype(np.float32) for sha, (_, s) in scenes.items()})
    meta = {sha: {"seed": seed, "descriptors": dataclasses.asdict(s.descriptors),
                  "transcript": dataclasses.asdict(s.transcript) if s.transcript else None}
            for sha, (seed, s) in scenes.items()}
    path.with_suffix(".json").write_text(json.dumps(meta))


def load_scenes(path: Path, labels: list[str]) -> dict[str, tuple[int, composer.Scene]]:
    from core.models.teachers.descriptors import Descriptors
    from core.models.teachers.speech import Transcript
    if not (path.with_suffix(".npz").exists() and path.with_suffix(".json").exists()):
        return {}
    meta = json.loads(path.with_suffix(".json").read_text())
    out = {}
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as probs:
        for sha, m in meta.items():
            d = {**m["descriptors"], "loud_span": tuple(m["descriptors"]["loud_span"])}
            t = Transcript(**m["transcript"]) if m["transcript"] else None
            out[sha] = (m["seed"], composer.Scene(labels, probs[sha], Descriptors(**d), t))
    return out


def scenes_of(items: list[bs.Item], path: Path, batch: int = 32) -> dict[str, tuple[int, composer.Scene]]:
    """(seed, scene) per content hash; the tagger and Whisper run only on clips not cached yet."""
    from core.models.teachers.embedded import wording_seed
    from core.store import audio
    teacher = bs.teacher()
    scenes = load_scenes(path, teacher.labels)
    todo = list({it.sha: it for it in items if it.sha not in scenes}.values())
    started = time.time()
    for n in range(0, len(todo), batch):
        chunk = todo[n:n + batch]
        waves = [audio.decode(it.path)[0] for it in chunk]
        for it, wave, scene in zip(chunk, waves, teacher.analyse(waves)):
            scenes[it.sha] = (wording_seed(wave), scene)
        print(f"analysed {n + len(chunk)}/{len(todo)} ({(n + len(chunk)) / (time.time() - started):.0f} clips/s)",
              file=sys.stderr, flush=True)
    if todo:
        save_scenes(path, scenes)
    return scenes


# -- scoring -----------------------------------------------------------------------------------------------
def compose_all(scenes: dict, variant: str) -> dict[str, composer.Composed]:
    patch = VARIANTS[variant]
    with mock.patch.multiple(composer, **patch) if patch else contextlib.nullcontext():
        return {sha: composer.compose(scene, seed=seed) for sha, (seed, scene) in scenes.items()}


def zero_shot(items: list[bs.Item], captions: dict[str, str]) -> dict[str, float]:
    """Per set: share of clips whose caption is nearest its own class name (student_bench's caption column)."""
    from core.pipeline import metrics
    from training.evaluate import DEFAULT_TEMPLATES, TeacherCaptions, classifier, clean_label
    side = TeacherCaptions()
    out = {}
    for name in bs.EVAL_SETS:
        its = [it for it in items if it.set == name]
        if not its:
            continue
        classes = sorted({clean_label(it.label) for it in its})
        truth = np.array([classes.index(clean_label(it.label)) for it in its])
        emb = np.asarray(side.embed_text([captions[it.sha] for it in its]), dtype=np.float64)
        scores = emb @ classifier(side, classes, DEFAULT_TEMPLATES).T.astype(np.float64)
        out[name] = round(float(np.mean(metrics.zero_shot_from_scores(scores, truth) == truth)), 4)
    return out


def write_captions(path: Path, items: list[bs.Item], composed: dict[str, composer.Composed]) -> int:
    teacher = bs.teacher()
    with path.open("w", encoding="utf-8") as fh:
        for sha in dict.fromkeys(it.sha for it in items):
            c = composed[sha]
            fh.write(json.dumps({"key": teacher.cache_key(sha), "caption": c.caption, "confidence": c.confidence,
                                 "teacher": teacher.identity, "prompt": teacher.prompt}, ensure_ascii=False) + "\n")
    return len(composed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                        help="variants to score (default: all): " + ", ".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="20 clips per set, two variants (a smoke run)")
    parser.add_argument("--write-captions", metavar="NAME", choices=list(VARIANTS),
                        help="also write <work>/captions-NAME.jsonl for student_bench")
    parser.add_argument("--work", type=Path, default=bs.DEFAULT_WORK)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    items = bs.load_items(args.work)          # every set: a written caption file must cover the whole pool
    variants = args.variant
    if args.quick:
        items = [it for name in bs.EVAL_SETS for it in [i for i in items if i.set == name][:20]]
        variants = variants[:2]
    started = time.time()
    scenes = scenes_of(items, args.work / "composer_scenes")
    report = {"clips": {s: sum(it.set == s for it in items) for s in bs.EVAL_SETS}, "pool": len(scenes),
              "analyse_s": round(time.time() - started, 1), "zero_shot": {}}
    print(f"{'variant':24s} " + " ".join(f"{s[:12]:>12s}" for s in bs.EVAL_SETS) + "   mean")
    for name in dict.fromkeys([*variants, *([args.write_captions] if args.write_captions else [])]):
        composed = compose_all(scenes, name)
        acc = zero_shot(items, {sha: c.caption for sha, c in composed.items()})
        report["zero_shot"][name] = acc
        print(f"{name:24s} " + " ".join(f"{100 * acc[s]:12.1f}" for s in bs.EVAL_SETS if s in acc)
              + f" {100 * np.mean(list(acc.values())):6.1f}", flush=True)
        if name == args.write_captions:
            out = args.work / f"captions-{name}.jsonl"
            write_captions(out, items, composed)
            report["captions_file"] = str(out)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
