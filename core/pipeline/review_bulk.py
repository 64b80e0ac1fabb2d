"""Bulk review actions: preview which clips a filter matches (with the versions seen), then apply
clip by clip, leaving alone any clip somebody changed since the preview.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from core.store.catalog import Catalog, ClipQuery, ConflictError

BULK_ACTIONS = {
    "accept": "Accept teacher captions at or above a confidence",
    "reject": "Reject the clips matching the filter",
    "reset": "Reset the clips matching the filter to pending",
}


@dataclass
class BulkFilter:
    text: str = ""                     # substring of file name or caption
    source: str | None = None
    status: str | None = None          # review status; bulk accept defaults to pending
    min_confidence: float | None = None
    max_confidence: float | None = None
    teacher: str | None = None


@dataclass
class BulkPreview:
    action: str
    filter: BulkFilter
    targets: list[tuple[int, int, int | None]]     # (clip id, review version seen, caption id)
    sample: list[dict]                              # a few rows to show before applying

    @property
    def count(self) -> int:
        return len(self.targets)


@dataclass
class BulkResult:
    applied: int
    conflicts: list[int]               # changed by somebody since the preview: left alone, listed
    cancelled: bool = False

    def summary(self, action: str) -> str:
        text = f"{action}: {self.applied} clips saved"
        if self.conflicts:
            text += (f"; {len(self.conflicts)} changed by someone since the preview and were left alone "
                     f"(clips {', '.join(map(str, self.conflicts[:20]))}{' …' if len(self.conflicts) > 20 else ''})")
        return text + (" — cancelled" if self.cancelled else "")


def preview_bulk(catalog: Catalog, action: str, flt: BulkFilter | None = None, sample_size: int = 10) -> BulkPreview:
    """Which clips a bulk action would change, with the versions seen now (the apply checks them)."""
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    flt = flt or BulkFilter()
    status = flt.status or ("pending" if action == "accept" else None)
    rows, _ = catalog.clip_rows(ClipQuery(text=flt.text, source=flt.source or None, status=status,
                                          limit=10**9))
    targets, sample = [], []
    for row in rows:
        cap = row.caption
        conf = cap.confidence if cap else None
        if action == "accept" and (cap is None or cap.origin != "teacher"):
            continue
        if action == "reset" and row.review.status == "pending":
            continue
        if action == "reject" and row.review.status == "rejected":
            continue
        if flt.teacher and (cap is None or cap.teacher != flt.teacher):
            continue
        if flt.min_confidence is not None and (conf is None or conf < flt.min_confidence):
            continue
        if flt.max_confidence is not None and (conf is None or conf > flt.max_confidence):
            continue
        targets.append((row.clip.id, row.review.version, cap.id if cap else None))
        if len(sample) < sample_size:
            sample.append({"clip": row.clip.id, "file": row.recording.original_name,
                           "status": row.review.status, "confidence": conf, "caption": cap.text if cap else ""})
    return BulkPreview(action, flt, targets, sample)


def apply_bulk(catalog: Catalog, preview: BulkPreview, annotator: str, *, reason: str | None = None,
               progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> BulkResult:
    """Apply a previewed bulk action clip by clip; a clip changed since the preview is skipped and listed."""
    if not annotator or not annotator.strip():
        raise ValueError("say who you are (annotator name) before a bulk action")
    status = {"accept": "accepted", "reject": "rejected", "reset": "pending"}[preview.action]
    applied, conflicts = 0, []
    for i, (clip_id, version, caption_id) in enumerate(preview.targets):
        if cancel is not None and cancel.is_set():
            return BulkResult(applied, conflicts, cancelled=True)
        try:
            catalog.save_review(clip_id, status=status, expected_version=version, annotator=annotator,
                                caption_id=caption_id, reason=reason if preview.action == "reject" else None,
                                action=f"bulk {preview.action}")
            applied += 1
        except ConflictError:
            conflicts.append(clip_id)
        if progress and (i % 50 == 0 or i == preview.count - 1):
            progress(i + 1, preview.count)
    return BulkResult(applied, conflicts)
