"""Batch captioning over the catalogue: choose clips, caption them with a teacher, store with provenance.

    report = caption_clips(ws, select_clips(ws, "uncaptioned"), get_teacher("embedded"),
                           progress=lambda done, total, msg: ..., cancel=threading.Event())

- Cached: a caption is keyed by (clip content key, teacher identity, prompt). A clip whose key is
  already captioned costs nothing; the same audio window imported again (after a delete, or in
  another recording slot) gets a copy of that caption without running the teacher.
- Resumable: captions are written as each batch finishes, so a cancelled or crashed run picks up
  where it stopped when run again.
- One bad clip never stops a batch: its error is recorded with `catalog.add_caption_failure`
  and reported; the rest go on.
- Append-only: re-captioning (force=True, or another teacher/prompt) adds a version, never replaces.
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.auth.access import redact
from core.store.catalog import Caption, ClipQuery
from core.store.files import atomic_write
from core.pipeline.niceness import lower_this_thread, run_niced
from core.models.teachers.base import Teacher, TeacherOutput
from core.store.workspace import Workspace

Progress = Callable[[int, int, str], None]
SELECTIONS = ("uncaptioned", "all", "filter", "ids")


@dataclass
class CaptionReport:
    total: int = 0
    captioned: int = 0                 # ran the teacher
    reused: int = 0                    # copied from the cache (same audio window elsewhere)
    skipped: int = 0                   # already captioned by this teacher + prompt
    failed: int = 0
    cancelled: bool = False
    failures: list[tuple[int, str]] = field(default_factory=list)     # (clip id, error)
    caption_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.captioned + self.reused + self.skipped + self.failed

    def summary(self) -> str:
        rate = f" ({self.captioned / self.seconds:.1f} clips/s)" if self.seconds > 0 and self.captioned else ""
        text = (f"{self.captioned} captioned{rate}, {self.reused} reused from cache, {self.skipped} already done, "
                f"{self.failed} failed, of {self.total} clips")
        return text + (" — cancelled: run again to continue" if self.cancelled else "")


def select_clips(ws: Workspace, selection: str | Sequence[int] = "uncaptioned", *, teacher: Teacher | None = None,
                 query: ClipQuery | None = None, limit: int | None = None) -> list[int]:
    """Clip ids to caption.

    "uncaptioned": clips with no caption from this teacher+prompt (any teacher if none given);
    "all": every clip; "filter": clips matching `query` (source, status, text…); a list: those ids.
    """
    if not isinstance(selection, str):
        ids = [int(i) for i in selection]
    elif selection == "all":
        ids = ws.catalog.clip_ids()
    elif selection == "uncaptioned":
        ids = ws.catalog.uncaptioned_clip_ids() if teacher is None else _not_captioned_by(ws, teacher)
    elif selection == "filter":
        q = query or ClipQuery()
        rows, total = ws.catalog.clip_rows(ClipQuery(**{**q.__dict__, "limit": 10 ** 9, "offset": 0}))
        ids = [r.clip.id for r in rows]
    else:
        raise ValueError(f"unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)} or a list of ids")
    return ids[:limit] if limit else ids


def _not_captioned_by(ws: Workspace, teacher: Teacher) -> list[int]:
    """Clips without a caption from this teacher identity and prompt (the cache decides exactly)."""
    candidates = ws.catalog.uncaptioned_clip_ids(teacher=teacher.name)
    done = set(ws.catalog.clip_ids()) - set(candidates)
    # clips captioned by this backend but with another model/prompt still count as uncaptioned
    for clip_id in list(done):
        if not any(c.teacher == teacher.name and c.model == teacher.model_id and c.prompt == teacher.prompt
                   for c in ws.catalog.captions(clip_id)):
            candidates.append(clip_id)
    return sorted(candidates)


def caption_clips(ws: Workspace, clip_ids: Sequence[int], teacher: Teacher, *, progress: Progress | None = None,
                  cancel: threading.Event | None = None, force: bool = False,
                  batch_size: int | None = None) -> CaptionReport:
    """Caption `clip_ids` with `teacher`; see the module docstring for caching and failures."""
    import time

    cat = ws.catalog
    report = CaptionReport(total=len(clip_ids))
    started = time.perf_counter()
    batch_size = batch_size or teacher.batch_size
    todo: list[tuple[int, str]] = []              # (clip id, cache key) that need the teacher

    def tick(message: str) -> None:
        if progress:
            progress(report.done, report.total, message)

    for clip_id in clip_ids:
        try:
            key = teacher.cache_key(ws.clip_key(cat.get_clip(clip_id)))
        except Exception as exc:  # noqa: BLE001 - a clip deleted meanwhile, a broken recording…
            _fail(ws, report, clip_id, teacher, exc)
            continue
        hit = None if force else cat.cached_caption(key)
        if hit is not None and hit.clip_id == clip_id:
            report.skipped += 1
        elif hit is not None:
            report.caption_ids.append(_copy(ws, clip_id, hit).id)
            report.reused += 1
        elif not force and (kept := _kept_output(ws, key)) is not None:
            report.caption_ids.append(_store(ws, clip_id, key, kept, keep=False).id)
            report.reused += 1
        else:
            todo.append((clip_id, key))
    tick(f"{len(todo)} clips to caption with {teacher.identity}")

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-loader", initializer=lower_this_thread) as loader:
        # decode the next batch while the teacher works on this one
        pending = loader.submit(_load, ws, batches[0]) if batches else None
        for n, batch in enumerate(batches):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            loaded = pending.result()
            pending = loader.submit(_load, ws, batches[n + 1]) if n + 1 < len(batches) else None
            ready = [(cid, key, w) for cid, key, w in loaded if not isinstance(w, Exception)]
            for cid, _, err in loaded:
                if isinstance(err, Exception):
                    _fail(ws, report, cid, teacher, err)
            # the teacher's work yields the CPU to searches (core/niceness)
            results = run_niced(teacher.caption_each, [w for _, _, w in ready]) if ready else []
            for (cid, key, _), out in zip(ready, results):
                if isinstance(out, Exception):
                    _fail(ws, report, cid, teacher, out)
                else:
                    report.caption_ids.append(_store(ws, cid, key, out).id)
                    report.captioned += 1
            tick(f"batch {n + 1}/{len(batches)}")
        if pending is not None:
            pending.cancel()
    if cancel is not None and cancel.is_set() and report.done < report.total:
        report.cancelled = True
    report.seconds = time.perf_counter() - started
    tick(report.summary())
    return report


def _load(ws: Workspace, batch: list[tuple[int, str]]) -> list[tuple[int, str, np.ndarray | Exception]]:
    out = []
    for clip_id, key in batch:
        try:
            out.append((clip_id, key, ws.load_clip(clip_id)))
        except Exception as exc:  # noqa: BLE001 - reported per clip
            out.append((clip_id, key, exc))
    return out


KEEP_PREFIX = "caption-cache:"


def _kept_output(ws: Workspace, key: str) -> TeacherOutput | None:
    """A teacher output kept in the workspace's key-value store: it outlives the clip it was made for,
    so deleting and re-importing the same audio does not run the teacher again."""
    raw = ws.catalog.get_value(KEEP_PREFIX + key)
    if raw is None:
        return None
    try:
        return TeacherOutput(**json.loads(raw))
    except (TypeError, ValueError):
        return None


def write_outputs(ws: Workspace, clip_ids: Sequence[int], path) -> int:
    """Write the kept teacher outputs of `clip_ids` as JSON lines {"key", "output"} (for `restore_outputs`:
    the bundled demo's captions, scripts/demo_captions.py); returns how many."""
    lines = []
    for clip_id in clip_ids:
        for cap in ws.catalog.captions(clip_id):
            kept = _kept_output(ws, cap.cache_key) if cap.cache_key else None
            if cap.origin == "teacher" and kept is not None:
                lines.append(json.dumps({"key": cap.cache_key, "output": kept.__dict__}, ensure_ascii=False,
                                        sort_keys=True))
                break
    with atomic_write(Path(path)) as tmp:
        tmp.write_text("".join(line + "\n" for line in sorted(lines)), encoding="utf-8")
    return len(lines)


def read_outputs(path) -> dict[str, TeacherOutput]:
    """`write_outputs`' file → {cache key: output}; a line that does not parse is left out."""
    out: dict[str, TeacherOutput] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            output = TeacherOutput(**{k: v for k, v in row["output"].items() if k != "extra"})
            if isinstance(row["key"], str) and "|" in row["key"] and isinstance(output.caption, str):
                out[row["key"]] = output
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return out


def restore_outputs(ws: Workspace, outputs: dict[str, TeacherOutput]) -> int:
    """Store kept teacher outputs as the captions of the audio windows they were made for (a cache key
    starts with the clip's content key), on clips that have no caption yet; returns how many.

    The caption keeps its provenance (teacher, model, prompt, cache key), so running the same teacher
    later counts these clips as done, and another teacher or prompt adds a version as usual."""
    by_window = {key.split("|", 1)[0]: (key, out) for key, out in outputs.items()}
    restored = 0
    for clip_id in ws.catalog.uncaptioned_clip_ids():
        found = by_window.get(ws.clip_key(ws.catalog.get_clip(clip_id)))
        if found is not None:
            _store(ws, clip_id, found[0], found[1])
            restored += 1
    return restored


def _store(ws: Workspace, clip_id: int, key: str, out: TeacherOutput, keep: bool = True) -> Caption:
    if keep:
        kept = {k: v for k, v in out.__dict__.items() if k != "extra"}
        ws.catalog.set_value(KEEP_PREFIX + key, json.dumps(kept, ensure_ascii=False))
    return ws.catalog.add_caption(clip_id, out.caption, "teacher", teacher=out.teacher, model=out.model,
                                  prompt=out.prompt, tags=out.tags, confidence=out.confidence, cache_key=key)


def _copy(ws: Workspace, clip_id: int, hit: Caption) -> Caption:
    return ws.catalog.add_caption(clip_id, hit.text, "teacher", teacher=hit.teacher, model=hit.model,
                                  prompt=hit.prompt, tags=hit.tags, confidence=hit.confidence, cache_key=hit.cache_key)


def _fail(ws: Workspace, report: CaptionReport, clip_id: int, teacher: Teacher, exc: BaseException) -> None:
    # whatever a backend put into its error, no credential is stored (catalogue, backups, the Captions tab)
    error = redact(f"{type(exc).__name__}: {exc}", ws.settings.openai_api_key)[:2000]
    report.failed += 1
    report.failures.append((clip_id, error))
    try:
        ws.catalog.add_caption_failure(clip_id, teacher.identity, error)
    except Exception:  # noqa: BLE001 - the clip itself may be gone; the report still has it
        pass


def caption_selection(ws: Workspace, teacher_name: str | None = None, *, prompt: str | None = None,
                      selection: str | Sequence[int] = "uncaptioned", query: ClipQuery | None = None,
                      limit: int | None = None, force: bool = False, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> CaptionReport:
    """The whole job the Captions tab and the CLI start: pick the teacher, pick the clips, caption them."""
    from core.models.teachers import get_teacher

    # loading a teacher is seconds of work too; the pools its models start inherit the lower priority
    teacher = run_niced(get_teacher, teacher_name, ws.settings, prompt=prompt or None)
    ids = select_clips(ws, selection, teacher=teacher, query=query)
    return caption_clips(ws, ids[:limit] if limit else ids, teacher, progress=progress, cancel=cancel, force=force)


# -- what the Captions tab and the CLI show --------------------------------------------------------
CAPTION_COLUMNS = ["clip", "file", "start", "end", "caption", "teacher", "confidence", "versions"]
VERSION_COLUMNS = ["caption id", "caption", "origin", "teacher", "model", "prompt", "confidence", "tags", "created"]


def caption_rows(ws: Workspace, query: ClipQuery | None = None) -> tuple[list[list], int]:
    """One row per clip: its current caption with provenance. Returns (rows, total matching)."""
    rows, total = ws.catalog.clip_rows(query or ClipQuery())
    out = []
    for r in rows:
        cap = r.caption
        out.append([r.clip.id, r.recording.original_name, round(r.clip.start, 2), round(r.clip.end, 2),
                    cap.text if cap else "", _who(cap) if cap else "",
                    round(cap.confidence, 3) if cap and cap.confidence is not None else None,
                    len(ws.catalog.captions(r.clip.id))])
    return out, total


def caption_versions(ws: Workspace, clip_id: int) -> list[list]:
    """Every caption a clip has had, newest first (the append-only history)."""
    out = []
    for c in reversed(ws.catalog.captions(clip_id)):
        tags = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.tags.items(), key=lambda kv: -kv[1])[:6]
                         if isinstance(v, (int, float)))
        out.append([c.id, c.text, c.origin, c.teacher or c.annotator or "", c.model or "", c.prompt or "",
                    round(c.confidence, 3) if c.confidence is not None else None, tags, c.created])
    return out


def failure_rows(ws: Workspace, limit: int = 100) -> list[list]:
    return [[f["clip_id"], f["teacher"], f["error"], f["created"]] for f in ws.catalog.caption_failures(limit)]


def _who(c: Caption) -> str:
    return c.teacher if c.origin == "teacher" else (c.annotator or c.origin)
