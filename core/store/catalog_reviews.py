"""The catalogue's review tables: each clip's review (versioned, every save an event), overlap
annotations, and restoring a clip's whole history from an export. A part of `Catalog`.
"""
from __future__ import annotations

import json
from typing import Sequence

from core.store.catalog_records import (REVIEW_STATUSES, Annotation, ConflictError, Review, ReviewEvent,
                                        _annotation, _review, now)

# a clip's review row, inserted or replaced whole (saves and restores both write it)
_UPSERT_REVIEW = ("INSERT INTO reviews(clip_id, status, caption_id, annotator, reason, version, updated)"
                  " VALUES(?,?,?,?,?,?,?) ON CONFLICT(clip_id) DO UPDATE SET status=excluded.status,"
                  " caption_id=excluded.caption_id, annotator=excluded.annotator, reason=excluded.reason,"
                  " version=excluded.version, updated=excluded.updated")


class ReviewTables:
    """Reviews, review events and annotations (mixed into `Catalog`, which supplies the connection)."""

    # -- reviews -----------------------------------------------------------------------------
    def get_review(self, clip_id: int) -> Review:
        with self._connect() as db:
            return _review(db.execute("SELECT * FROM reviews WHERE clip_id=?", (clip_id,)).fetchone(), clip_id)

    def save_review(self, clip_id: int, *, status: str, expected_version: int, annotator: str | None,
                    caption_id: int | None = None, new_text: str | None = None, reason: str | None = None,
                    action: str | None = None) -> Review:
        """Record a review decision if nobody else saved since `expected_version`.

        `new_text` appends an annotator caption and chooses it. Raises ConflictError
        (carrying the other save) when the version moved: nothing is overwritten.
        """
        if status not in REVIEW_STATUSES:
            raise ValueError(f"unknown review status {status!r}")
        with self.transaction() as db:
            before = _review(db.execute("SELECT * FROM reviews WHERE clip_id=?", (clip_id,)).fetchone(), clip_id)
            if before.version != expected_version:
                raise ConflictError(before)
            if new_text is not None:
                caption_id = self._insert_caption(db, clip_id, new_text.strip(), "annotator", annotator=annotator).id
            elif caption_id is None:
                caption_id = before.caption_id
            after = Review(clip_id, status, caption_id, annotator, reason, before.version + 1, now())
            db.execute(_UPSERT_REVIEW, (clip_id, status, caption_id, annotator, reason, after.version, after.updated))
            db.execute("INSERT INTO review_events(clip_id, annotator, action, before, after, created)"
                       " VALUES(?,?,?,?,?,?)",
                       (clip_id, annotator, action or status, json.dumps(before.__dict__),
                        json.dumps(after.__dict__), after.updated))
        return after

    def review_events(self, clip_id: int | None = None, limit: int = 1000) -> list[ReviewEvent]:
        with self._connect() as db:
            if clip_id is None:
                rows = db.execute("SELECT * FROM review_events ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = db.execute("SELECT * FROM review_events WHERE clip_id=? ORDER BY id", (clip_id,))
            return [ReviewEvent(r["id"], r["clip_id"], r["annotator"], r["action"], json.loads(r["before"]),
                                json.loads(r["after"]), r["created"]) for r in rows]

    def clip_ids_by_status(self, status: str) -> list[int]:
        with self._connect() as db:
            return [r[0] for r in db.execute(
                "SELECT c.id FROM clips c LEFT JOIN reviews rv ON rv.clip_id=c.id"
                " WHERE COALESCE(rv.status,'pending')=? ORDER BY c.id", (status,))]

    # -- review workflow: all reviews at once, tallies, overlap annotations, restore ---------------
    def reviews(self, clip_ids: Sequence[int] | None = None) -> dict[int, Review]:
        """clip id → its review (a pending version-0 review where none was saved), in clip id order."""
        with self._connect() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM clips ORDER BY id")]
            rows = {r["clip_id"]: r for r in db.execute("SELECT * FROM reviews")}
        if clip_ids is not None:
            wanted = set(clip_ids)
            ids = [i for i in ids if i in wanted]
        return {i: _review(rows.get(i), i) for i in ids}

    def review_tallies(self) -> dict[str, dict[str, int]]:
        """annotator → status → number of clips whose current review that person saved."""
        out: dict[str, dict[str, int]] = {}
        with self._connect() as db:
            for who, status, n in db.execute(
                    "SELECT COALESCE(annotator, ''), status, COUNT(*) FROM reviews GROUP BY 1, 2"):
                out.setdefault(who, {})[status] = n
        return out

    def event_tallies(self, since: str | None = None) -> dict[str, int]:
        """annotator → review actions recorded (all time, or since an ISO timestamp)."""
        with self._connect() as db:
            rows = db.execute("SELECT COALESCE(annotator, ''), COUNT(*) FROM review_events"
                              " WHERE created >= ? GROUP BY 1", (since or "",)).fetchall()
        return {who: n for who, n in rows}

    def add_annotation(self, clip_id: int, annotator: str, status: str, *, caption_id: int | None = None,
                       new_text: str | None = None, reason: str | None = None,
                       action: str | None = None) -> Annotation:
        """Append one person's decision (overlap review). `new_text` appends their caption and chooses it."""
        if status not in REVIEW_STATUSES:
            raise ValueError(f"unknown review status {status!r}")
        with self.transaction() as db:
            if new_text is not None:
                caption_id = self._insert_caption(db, clip_id, new_text.strip(), "annotator", annotator=annotator).id
            cur = db.execute("INSERT INTO annotations(clip_id, annotator, status, caption_id, reason, action, created)"
                             " VALUES(?,?,?,?,?,?,?)",
                             (clip_id, annotator, status, caption_id, reason, action or status, now()))
            return _annotation(db.execute("SELECT * FROM annotations WHERE id=?", (cur.lastrowid,)).fetchone())

    def annotations(self, clip_id: int | None = None) -> list[Annotation]:
        """Every overlap decision (of one clip, or all), oldest first."""
        return [_annotation(r) for r in self._rows("annotations", "clip_id", clip_id)]

    def current_annotations(self) -> dict[int, dict[str, Annotation]]:
        """clip id → annotator → that person's newest decision."""
        with self._connect() as db:
            rows = db.execute("SELECT a.* FROM annotations a JOIN (SELECT MAX(id) AS id FROM annotations"
                              " GROUP BY clip_id, annotator) m ON a.id = m.id ORDER BY a.id").fetchall()
        out: dict[int, dict[str, Annotation]] = {}
        for r in rows:
            out.setdefault(r["clip_id"], {})[r["annotator"]] = _annotation(r)
        return out

    def restore_clip_history(self, clip_id: int, captions: Sequence[dict], review: dict | None,
                             events: Sequence[dict] = (), annotations: Sequence[dict] = ()) -> dict[int, int]:
        """Re-create a clip's captions, review, review events and annotations as another workspace had them.

        Used when importing an export: timestamps and provenance are kept, caption ids are
        re-numbered and every reference follows. Returns old caption id → new caption id.
        """
        ids: dict[int, int] = {}

        def remap(state: dict) -> dict:
            state = dict(state, clip_id=clip_id)
            if state.get("caption_id") is not None:
                state["caption_id"] = ids.get(state["caption_id"])
            return state

        with self.transaction() as db:
            for c in captions:
                cur = db.execute(
                    "INSERT INTO captions(clip_id, text, origin, teacher, model, prompt, annotator, tags,"
                    " confidence, cache_key, created) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                    (clip_id, c["text"], c.get("origin") or "import", c.get("teacher"), c.get("model"),
                     c.get("prompt"), c.get("annotator"), json.dumps(c.get("tags") or {}, ensure_ascii=False),
                     c.get("confidence"), c.get("cache_key"), c.get("created") or now()))
                if c.get("id") is not None:
                    ids[int(c["id"])] = cur.lastrowid
            for e in events:
                db.execute("INSERT INTO review_events(clip_id, annotator, action, before, after, created)"
                           " VALUES(?,?,?,?,?,?)",
                           (clip_id, e.get("annotator"), e["action"], json.dumps(remap(e.get("before") or {})),
                            json.dumps(remap(e.get("after") or {})), e.get("created") or now()))
            for a in annotations:
                db.execute("INSERT INTO annotations(clip_id, annotator, status, caption_id, reason, action, created)"
                           " VALUES(?,?,?,?,?,?,?)",
                           (clip_id, a["annotator"], a["status"], remap(a).get("caption_id"), a.get("reason"),
                            a.get("action") or a["status"], a.get("created") or now()))
            if review and (review.get("version") or review.get("status", "pending") != "pending"):
                r = remap(review)
                db.execute(_UPSERT_REVIEW,
                           (clip_id, r.get("status", "pending"), r.get("caption_id"), r.get("annotator"),
                            r.get("reason"), int(r.get("version") or 0), r.get("updated")))
        return ids
