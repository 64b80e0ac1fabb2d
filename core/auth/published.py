"""What each role may read of the catalogue.

Annotators and admins read everything. Visitors read the *published* caption of a clip and nothing of
the work behind it: no review status, no annotator names, no reject reasons, no caption history, no
drafts. The published caption (`Catalog.published_caption`, the SQL rule `catalog.PUBLISHED_CAPTION`) is

- the caption a review accepted or wrote, once the clip is decided as accepted or edited;
- none once the clip is rejected (rejected text is never shown);
- otherwise (pending, skipped, never reviewed) the newest caption no annotator wrote: a teacher's
  (or an imported one), never an annotator's draft.

Search results (and hybrid caption scores) use the published caption too: the index stores only that (core/pipeline/index.py).
The map reads captions itself; see the README's access section.
"""
from __future__ import annotations

from dataclasses import replace

from core.auth import access
from core.store.catalog import ClipQuery
from core.store.workspace import Workspace

PRIVATE_COLUMNS = ["clip", "file", "source", "start", "end", "status", "caption", "label"]
PUBLIC_COLUMNS = [c for c in PRIVATE_COLUMNS if c != "status"]


def reads_private(role: str) -> bool:
    """Whether a role reads annotators' work (statuses, names, drafts, history)."""
    return access.allows(role, access.ANNOTATOR)


def clip_rows(ws: Workspace, query: ClipQuery, role: str) -> tuple[list[dict], int]:
    """A page of the clip table as `role` may read it: (rows keyed by column, total matching).
    For visitors the caption is the published one, the text filter matches only that, and the status
    filter is ignored (it would tell which clips were rejected)."""
    private = reads_private(role)
    if not private:
        query = replace(query, status=None, published=True)
    rows, total = ws.catalog.clip_rows(query)
    out = []
    for r in rows:
        row = {"clip": r.clip.id, "file": r.recording.original_name, "source": r.recording.source,
               "start": r.clip.start, "end": r.clip.end, "status": r.review.status,
               "caption": r.caption.text if r.caption else "", "label": r.recording.meta.get("label", "")}
        out.append(row if private else {k: row[k] for k in PUBLIC_COLUMNS})
    return out, total


def clip_record(ws: Workspace, clip_id: int, role: str) -> dict:
    """The details of one clip as `role` may read them (KeyError when there is no such clip)."""
    cat = ws.catalog
    clip = cat.get_clip(int(clip_id))
    rec = cat.get_recording(clip.recording_id)
    record = {"clip": clip.id, "recording": rec.original_name, "source": rec.source,
              "start": clip.start, "end": clip.end, "recording duration": rec.duration,
              "original sample rate": rec.sample_rate, "metadata": rec.meta}
    if not reads_private(role):
        published = cat.published_caption(clip.id)
        return record | {"caption": published.text if published else None}
    return record | {
        "review": cat.get_review(clip.id).status,
        "captions": [{"text": c.text, "origin": c.origin, "teacher": c.teacher, "annotator": c.annotator,
                      "created": c.created} for c in cat.captions(clip.id)]}
