"""The labelled sets the student benchmarks read, and the workspaces built from their teacher captions.

Shared by student_bench (cross-validation, leave-one-set-out, shipping) and review_gain: which clips a set
has, which are test clips, the teacher captions cached per set, and a workspace holding chosen items.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
DEMO = ROOT / "assets" / "demo"
TRAIN_ONLY_SETS = ["ovos_animals"]
EVAL_SETS = ["kitchen20", "jt_booth_sounds", "medley_solos_small", "fsdd"]
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "hearsay-student-bench"


@dataclass
class Item:
    set: str
    filename: str
    path: Path
    label: str | None
    group: str            # what must stay on one side of the split
    official: str         # the set's own split column, if any
    sha: str = ""         # content hash of the decoded audio (= the workspace recording's sha256)
    test: bool = False


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def is_test(item: Item) -> bool:
    """The `split` protocol's held-out rule (documented in the module docstring)."""
    if item.set == "kitchen20":
        return _unit(f"k20:{item.group}") < 0.25
    if item.set == "jt_booth_sounds":
        return _unit(f"jt:{item.group}") < 0.30
    if item.set == "medley_solos_small":
        return _unit(f"medley:{item.group}") < 0.40
    if item.set == "fsdd":
        return item.official == "test"
    return False


def load_items(work: Path) -> list[Item]:
    """Every clip of ../shared/data and assets/demo, with its content hash (cached: decoding is slow)."""
    from core.store import audio
    hashes_path = work / "content_hashes.json"
    hashes = json.loads(hashes_path.read_text()) if hashes_path.exists() else {}
    items: list[Item] = []
    for name in EVAL_SETS + TRAIN_ONLY_SETS:
        for row in csv.DictReader(open(DATA / name / "meta.csv", newline="", encoding="utf-8")):
            group = row.get("freesound_or_source_id") or row.get("uuid") or row["filename"]
            items.append(Item(name, row["filename"], DATA / name / "audio" / row["filename"], row.get("label"),
                              group, row.get("split", "")))
    if (DEMO / "meta.csv").exists():
        for row in csv.DictReader(open(DEMO / "meta.csv", newline="", encoding="utf-8")):
            items.append(Item("demo", row["filename"], DEMO / "audio" / row["filename"], row.get("label"),
                              row["filename"], ""))
    changed = False
    for it in items:
        key = str(it.path.resolve())
        if key not in hashes:
            hashes[key] = audio.content_hash(audio.decode(it.path)[0])
            changed = True
        it.sha = hashes[key]
        it.test = is_test(it)
    if changed:
        work.mkdir(parents=True, exist_ok=True)
        hashes_path.write_text(json.dumps(hashes))
    return items


# -- teacher captions ------------------------------------------------------------------------------------
def teacher():
    from core.models.teachers import get_teacher
    return get_teacher("embedded")


def caption_cache(work: Path) -> Path:
    return work / "teacher_captions.jsonl"


def read_captions(work: Path) -> dict[str, dict]:
    out = {}
    path = caption_cache(work)
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                out[row["key"]] = row
            except (ValueError, KeyError):
                continue
    return out


def caption_items(items: list[Item], work: Path, batch: int = 32) -> dict[str, dict]:
    """Teacher captions of every item (cached by teacher.cache_key(content hash)); returns sha → row."""
    from core.store import audio
    t = teacher()
    cache = read_captions(work)
    todo = [it for it in items if t.cache_key(it.sha) not in cache]
    todo = list({it.sha: it for it in todo}.values())
    started = time.time()
    for n in range(0, len(todo), batch):
        chunk = todo[n:n + batch]
        outs = t.caption_each([audio.decode(it.path)[0] for it in chunk])
        with caption_cache(work).open("a", encoding="utf-8") as fh:
            for it, out in zip(chunk, outs):
                if isinstance(out, Exception):
                    print(f"caption failed for {it.filename}: {out}", file=sys.stderr)
                    continue
                row = {"key": t.cache_key(it.sha), "caption": out.caption, "confidence": out.confidence,
                       "teacher": t.identity, "prompt": t.prompt}
                cache[row["key"]] = row
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        done = min(n + batch, len(todo))
        print(f"captioned {done}/{len(todo)} ({done / (time.time() - started):.1f} clips/s)", file=sys.stderr,
              flush=True)
    return {it.sha: cache[t.cache_key(it.sha)] for it in items if t.cache_key(it.sha) in cache}


# -- workspaces and training ----------------------------------------------------------------------------
def build_workspace(root: Path, items: list[Item], captions: dict[str, dict], features: Path):
    """A fresh workspace holding `items`, each with its teacher caption (unreviewed) and label (scoring only)."""
    from core.pipeline.importer import import_paths
    from core.store.settings import load_settings
    from core.store.workspace import Workspace

    if root.exists():
        shutil.rmtree(root)
    ws = Workspace(root, load_settings(workspace=root, seed_demo=False, window_seconds=12.0))
    (ws.cache_dir / "features").rmdir() if (ws.cache_dir / "features").exists() else None
    features.mkdir(parents=True, exist_ok=True)
    (ws.cache_dir / "features").symlink_to(features, target_is_directory=True)   # shared by every protocol
    by_set: dict[str, list[Item]] = {}
    for it in items:
        by_set.setdefault(it.set, []).append(it)
    t = teacher()
    for name, group in by_set.items():
        report = import_paths(ws, [it.path for it in group], source=name)
        for it, res in zip(group, report.results):
            if res.recording_id is None:
                continue
            if it.label:
                ws.catalog.update_recording_meta(res.recording_id, {"label": it.label})
    for clip in ws.catalog.clips():
        rec = ws.catalog.get_recording(clip.recording_id)
        row = captions.get(rec.sha256)
        if row:
            ws.catalog.add_caption(clip.id, row["caption"], "teacher", teacher=t.name, model=t.model_id,
                                   prompt=t.prompt, confidence=row.get("confidence"),
                                   cache_key=t.cache_key(ws.clip_key(clip)))
    return ws
