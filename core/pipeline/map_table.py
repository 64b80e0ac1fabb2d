"""The clip table of the map: what each point says (caption, tags, status, metadata), the rows
listed beside the plot, and sending listed clips back to the review queue.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import pandas as pd

if TYPE_CHECKING:
    from core.pipeline.projection import MapData
    from core.store.workspace import Workspace

NONE_VALUE = "(none)"
# Colouring fields every map offers; metadata columns (e.g. `label`) are added per workspace.
BUILTIN_FIELDS = ("cluster", "top_tag", "status", "source", "caption_distance")
CONTINUOUS_FIELDS = ("caption_distance",)


def clip_table(ws: "Workspace", clip_ids: Sequence[int], public: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """What the map shows per clip, in `clip_ids` order, plus the metadata column names found.

    Columns: clip_id, recording_id, name, source, start, end, caption, tags, top_tag, status,
    then one column per recording metadata key (e.g. label). `public` (what visitors read,
    core/auth/published.py): the published caption and its tags, and no status column.
    """
    from core.store.catalog import REVIEW_STATUSES

    catalog = ws.catalog
    wanted = [int(c) for c in clip_ids]
    clips = {c.id: c for c in catalog.clips()}
    recordings = {r.id: r for r in catalog.recordings()}
    captions = catalog.published_captions(wanted) if public else catalog.current_captions(wanted)
    status = {}
    for s in () if public else REVIEW_STATUSES:
        status.update(dict.fromkeys(catalog.clip_ids_by_status(s), s))

    meta_keys: list[str] = []
    rows = []
    for cid in wanted:
        clip = clips.get(cid)
        rec = recordings.get(clip.recording_id) if clip else None
        cap = captions.get(cid)
        tags = dict(cap.tags) if cap and cap.tags else {}
        if cap is not None and not tags and cap.origin != "teacher":
            # an edited caption carries no tags: show the teacher's from the history
            teacher = [c for c in catalog.captions(cid) if c.origin == "teacher" and c.tags]
            tags = dict(teacher[-1].tags) if teacher else {}
        ranked = [t for t, _ in sorted(tags.items(), key=lambda kv: -_score(kv[1]))]
        row = {
            "clip_id": cid,
            "recording_id": clip.recording_id if clip else -1,
            "name": rec.original_name if rec else "",
            "source": (rec.source if rec else "") or NONE_VALUE,
            "start": clip.start if clip else 0.0,
            "end": clip.end if clip else 0.0,
            "caption": cap.text if cap else "",
            "tags": ", ".join(ranked[:5]),
            "top_tag": ranked[0] if ranked else NONE_VALUE,
        }
        if not public:
            row["status"] = status.get(cid, "pending")
        for key, value in (rec.meta if rec else {}).items():
            column = key if key not in row and key not in BUILTIN_FIELDS else f"meta_{key}"
            if column not in meta_keys:
                meta_keys.append(column)
            row[column] = "" if value is None else str(value)
        rows.append(row)
    columns = ["clip_id", "recording_id", "name", "source", "start", "end", "caption", "tags", "top_tag"]
    table = pd.DataFrame(rows, columns=columns + ([] if public else ["status"]) + meta_keys)
    for key in meta_keys:
        table[key] = table[key].fillna("").replace("", NONE_VALUE)
    # label-like columns first: they are what people colour by
    meta_keys.sort(key=lambda k: (k != "label", k))
    return table, meta_keys


def _score(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def points_table(data: MapData, color: str = "cluster", query: str = "", outliers_only: bool = False,
                 limit: int = 500, clip_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """The visible points as rows (clip, colour value, caption, tags, status, distance): what the tab lists.
    `clip_ids`: only those clips, in that order (a selection made on the map)."""
    p = data.points
    if clip_ids is not None:
        order = {int(c): i for i, c in enumerate(clip_ids)}
        p = p[p["clip_id"].isin(order)].sort_values("clip_id", key=lambda c: c.map(order))
    if outliers_only:
        p = p[p["outlier"]]
    if query.strip():
        q = query.strip().lower()
        hay = (p["caption"] + " " + p["tags"] + " " + p["name"] + " " + field_text(p, color)).str.lower()
        p = p[hay.str.contains(q, regex=False)]
    if outliers_only or color == "caption_distance":
        p = p.sort_values("caption_distance", ascending=False, na_position="last")
    p = p.head(limit)
    table = pd.DataFrame({
        "clip": p["clip_id"].astype(int),
        color: field_text(p, color),
        "caption": p["caption"],
        "tags": p["tags"],
        "status": p["status"] if "status" in p else None,
        "distance": p["caption_distance"].astype("float64").round(3),
        "outlier": p["outlier"].map({True: "yes", False: ""}),
        "file": p["name"],
    })
    return table if "status" in p else table.drop(columns="status")   # a visitor's map: no review status


def field_text(points: pd.DataFrame, color: str) -> pd.Series:
    if color not in points:
        raise KeyError(f"unknown colouring field {color!r}")
    if color in CONTINUOUS_FIELDS:
        return points[color].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return points[color].astype(str)


@dataclass
class SendReport:
    sent: list[int] = field(default_factory=list)
    already_pending: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)      # someone saved between our read and write
    missing: list[int] = field(default_factory=list)        # no such clip (deleted meanwhile)

    def summary(self) -> str:
        others = ((self.already_pending, "already pending"), (self.missing, "no longer in the catalogue"),
                  (self.conflicts, "changed by someone else meanwhile (left as they are)"))
        return ", ".join([f"{len(self.sent)} sent to review"] + [f"{len(ids)} {what}" for ids, what in others if ids])


def send_to_review(ws: "Workspace", clip_ids: Sequence[int], *, annotator: str | None = None,
                   reason: str = "map: sent back to review") -> SendReport:
    """Put clips back in the review queue (status pending), never overwriting a concurrent save.
    Each goes through the review workflow (core.pipeline.review.requeue): history and undo see it as any decision."""
    from core.pipeline import review

    report = SendReport()
    for cid in dict.fromkeys(int(c) for c in clip_ids):
        try:
            ws.catalog.get_clip(cid)
        except KeyError:
            report.missing.append(cid)
            continue
        current = ws.catalog.get_review(cid)
        if current.status == "pending":
            report.already_pending.append(cid)
            continue
        try:
            review.requeue(ws.catalog, cid, current.version, annotator=annotator, caption_id=current.caption_id,
                           reason=reason)
        except review.ReviewConflict:
            report.conflicts.append(cid)
        else:
            report.sent.append(cid)
    return report
