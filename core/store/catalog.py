"""The catalogue: every piece of Hearsay's state that is not audio or vectors.

SQLite in WAL mode, one transaction per write, versioned migrations
(`PRAGMA user_version`). Dataclasses in, dataclasses out: no SQL lives
outside the catalogue modules. Captions and review events are append-only.

`Catalog` (this module: connection, recordings, clips, captions, settings, health) is
assembled from catalog_reviews (reviews, annotations) and catalog_models (models, runs,
evaluations); records and SQL rules live in catalog_records, the schema in catalog_schema.
Import names from here: this module is the catalogue's front door.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from core.store.catalog_models import ModelTables
from core.store.catalog_records import (ACCEPTING, CURRENT_CAPTION, DECIDED,  # noqa: F401  (re-exported)
                                        PUBLISHED_CAPTION, REVIEW_STATUSES, Annotation, Caption, Clip, ClipQuery,
                                        ClipRow, ConflictError, Evaluation, ModelRecord, Recording, Review,
                                        ReviewEvent, Run, Stats, _caption, _clip, _recording, _review, now)
from core.store.catalog_reviews import ReviewTables
from core.store.catalog_schema import (MIGRATIONS, RESTORE_HINT, CatalogCorrupt,  # noqa: F401  (re-exported)
                                       CatalogLost, CatalogUnusable, absolute_path, is_corruption, stored_path)


class Catalog(ReviewTables, ModelTables):
    """Typed access to `catalog.db`. Safe to share between threads: each call opens its own connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.root = self.path.parent.resolve()       # the workspace: relative paths are relative to it
        self._local = threading.local()
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                self._migrate(db)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self.close()
            raise CatalogCorrupt(f"{self.path} is damaged or not a catalogue ({exc}): {RESTORE_HINT}") from exc

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One long-lived connection per thread: opening is cheap but closing the last one
        # checkpoints the WAL, which made every short call cost milliseconds.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    def _one(self, table: str, key: int, what: str) -> sqlite3.Row:
        """The row of `table` with this id; KeyError("no <what> <id>") when there is none."""
        with self._connect() as db:
            row = db.execute(f"SELECT * FROM {table} WHERE id=?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no {what} {key}")
        return row

    def _rows(self, table: str, column: str, value) -> list[sqlite3.Row]:
        """Every row of `table` in id order, or (`value` not None) those whose `column` equals it."""
        with self._connect() as db:
            if value is None:
                return db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            return db.execute(f"SELECT * FROM {table} WHERE {column}=? ORDER BY id", (value,)).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error: no half-written records."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} has schema v{version}, newer than this Hearsay (v{len(MIGRATIONS)})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                if callable(script):
                    script(db, self.root)
                else:
                    for statement in script.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        with self._connect() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    # -- recordings and clips -----------------------------------------------------------------
    def add_recording(self, *, sha256: str, original_name: str, source: str, duration: float,
                      sample_rate: int, windows: Sequence[tuple[float, float]], meta: dict | None = None,
                      file_sha256: str | None = None) -> tuple[Recording, bool]:
        """Insert a recording with its clips in one transaction. Returns (recording, created)."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM recordings WHERE sha256=?", (sha256,)).fetchone()
            if row is not None:
                return _recording(row), False
            cur = db.execute(
                "INSERT INTO recordings(sha256, file_sha256, original_name, source, duration, sample_rate,"
                " meta, created) VALUES(?,?,?,?,?,?,?,?)",
                (sha256, file_sha256, original_name, source, duration, sample_rate,
                 json.dumps(meta or {}, ensure_ascii=False), now()))
            rec_id = cur.lastrowid
            db.executemany("INSERT INTO clips(recording_id, start, end) VALUES(?,?,?)",
                           [(rec_id, float(s), float(e)) for s, e in windows])
            return _recording(db.execute("SELECT * FROM recordings WHERE id=?", (rec_id,)).fetchone()), True

    def recording_by_file_hash(self, file_sha256: str) -> Recording | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM recordings WHERE file_sha256=?", (file_sha256,)).fetchone()
        return _recording(row) if row else None

    def get_recording(self, recording_id: int) -> Recording:
        return _recording(self._one("recordings", recording_id, "recording"))

    def update_recording_meta(self, recording_id: int, meta: dict) -> None:
        with self.transaction() as db:
            db.execute("UPDATE recordings SET meta=? WHERE id=?", (json.dumps(meta, ensure_ascii=False), recording_id))

    def recordings(self) -> list[Recording]:
        with self._connect() as db:
            return [_recording(r) for r in db.execute("SELECT * FROM recordings ORDER BY id")]

    def get_clip(self, clip_id: int) -> Clip:
        return _clip(self._one("clips", clip_id, "clip"))

    def clips(self, recording_id: int | None = None) -> list[Clip]:
        return [_clip(r) for r in self._rows("clips", "recording_id", recording_id)]

    def clip_ids(self) -> list[int]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT id FROM clips ORDER BY id")]

    def delete_clips(self, clip_ids: Sequence[int]) -> list[str]:
        """Delete clips with their captions and reviews (cascade); a recording left with no clip goes too.

        Returns the sha256 of recordings removed, so the caller can delete their audio files.
        """
        removed: list[str] = []
        with self.transaction() as db:
            rec_ids = {r[0] for r in db.execute(
                f"SELECT DISTINCT recording_id FROM clips WHERE id IN ({','.join('?' * len(clip_ids))})",
                list(clip_ids))} if clip_ids else set()
            db.executemany("DELETE FROM clips WHERE id=?", [(int(c),) for c in clip_ids])
            for rec_id in rec_ids:
                if db.execute("SELECT 1 FROM clips WHERE recording_id=? LIMIT 1", (rec_id,)).fetchone() is None:
                    removed.append(db.execute("SELECT sha256 FROM recordings WHERE id=?", (rec_id,)).fetchone()[0])
                    db.execute("DELETE FROM recordings WHERE id=?", (rec_id,))
        return removed

    def clip_rows(self, query: ClipQuery | None = None) -> tuple[list[ClipRow], int]:
        """A page of clips with recording, current caption and review; plus the total matching count."""
        q = query or ClipQuery()
        where, args = [], []
        if q.text:
            where.append("(r.original_name LIKE ? OR cap.text LIKE ?)")
            args += [f"%{q.text}%", f"%{q.text}%"]
        if q.source:
            where.append("r.source = ?")
            args.append(q.source)
        if q.recording_id is not None:
            where.append("c.recording_id = ?")
            args.append(q.recording_id)
        if q.status == "uncaptioned":
            where.append("cap.id IS NULL")
        elif q.status:
            where.append("COALESCE(rv.status, 'pending') = ?")
            args.append(q.status)
        # current caption: the one the review chose, else the newest (or the published one: see PUBLISHED_CAPTION)
        chosen = PUBLISHED_CAPTION if q.published else CURRENT_CAPTION
        sql = f"""
            FROM clips c JOIN recordings r ON r.id = c.recording_id
            LEFT JOIN reviews rv ON rv.clip_id = c.id
            LEFT JOIN captions cap ON cap.id = {chosen}
            {'WHERE ' + ' AND '.join(where) if where else ''}"""
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) {sql}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT c.id AS c_id, r.id AS r_id, cap.id AS cap_id, rv.clip_id AS rv_id {sql}"
                " ORDER BY c.id LIMIT ? OFFSET ?", args + [q.limit, q.offset]).fetchall()
            out = []
            for row in rows:
                clip = _clip(db.execute("SELECT * FROM clips WHERE id=?", (row["c_id"],)).fetchone())
                rec = _recording(db.execute("SELECT * FROM recordings WHERE id=?", (row["r_id"],)).fetchone())
                cap = None
                if row["cap_id"] is not None:
                    cap = _caption(db.execute("SELECT * FROM captions WHERE id=?", (row["cap_id"],)).fetchone())
                rv = db.execute("SELECT * FROM reviews WHERE clip_id=?", (clip.id,)).fetchone()
                out.append(ClipRow(clip, rec, cap, _review(rv, clip.id)))
        return out, total

    def sources(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT source FROM recordings ORDER BY source")]

    # -- captions ----------------------------------------------------------------------------
    def add_caption(self, clip_id: int, text: str, origin: str, *, teacher: str | None = None,
                    model: str | None = None, prompt: str | None = None, annotator: str | None = None,
                    tags: dict | None = None, confidence: float | None = None,
                    cache_key: str | None = None) -> Caption:
        with self.transaction() as db:
            return self._insert_caption(db, clip_id, text, origin, teacher, model, prompt, annotator,
                                        tags, confidence, cache_key)

    def _insert_caption(self, db, clip_id, text, origin, teacher=None, model=None, prompt=None,
                        annotator=None, tags=None, confidence=None, cache_key=None) -> Caption:
        cur = db.execute(
            "INSERT INTO captions(clip_id, text, origin, teacher, model, prompt, annotator, tags, confidence,"
            " cache_key, created) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (clip_id, text, origin, teacher, model, prompt, annotator,
             json.dumps(tags or {}, ensure_ascii=False), confidence, cache_key, now()))
        return _caption(db.execute("SELECT * FROM captions WHERE id=?", (cur.lastrowid,)).fetchone())

    def captions(self, clip_id: int) -> list[Caption]:
        """Every caption of a clip, oldest first (the append-only history)."""
        with self._connect() as db:
            return [_caption(r) for r in db.execute("SELECT * FROM captions WHERE clip_id=? ORDER BY id", (clip_id,))]

    def published_caption(self, clip_id: int) -> Caption | None:
        """The caption of a clip that visitors may read (PUBLISHED_CAPTION), or None."""
        with self._connect() as db:
            row = db.execute(f"""SELECT cap.* FROM clips c LEFT JOIN reviews rv ON rv.clip_id = c.id
                                 JOIN captions cap ON cap.id = {PUBLISHED_CAPTION} WHERE c.id = ?""",
                             (clip_id,)).fetchone()
        return _caption(row) if row else None

    def get_caption(self, caption_id: int) -> Caption:
        return _caption(self._one("captions", caption_id, "caption"))

    def published_captions(self, clip_ids: Sequence[int] | None = None) -> dict[int, Caption]:
        """clip id → the caption visitors may read (PUBLISHED_CAPTION); clips without one are left out."""
        return self._chosen_captions(PUBLISHED_CAPTION, clip_ids)

    def current_captions(self, clip_ids: Sequence[int] | None = None) -> dict[int, Caption]:
        """clip id → its current caption (the review's choice, else the newest)."""
        return self._chosen_captions(CURRENT_CAPTION, clip_ids)

    def _chosen_captions(self, rule: str, clip_ids: Sequence[int] | None) -> dict[int, Caption]:
        """clip id → the caption the SQL `rule` (CURRENT_CAPTION or PUBLISHED_CAPTION) picks."""
        with self._connect() as db:
            rows = db.execute(f"""SELECT cap.* FROM clips c LEFT JOIN reviews rv ON rv.clip_id = c.id
                                  JOIN captions cap ON cap.id = {rule}""").fetchall()
        wanted = None if clip_ids is None else set(clip_ids)
        return {r["clip_id"]: _caption(r) for r in rows if wanted is None or r["clip_id"] in wanted}

    def cached_caption(self, cache_key: str) -> Caption | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM captions WHERE cache_key=? ORDER BY id DESC LIMIT 1",
                             (cache_key,)).fetchone()
        return _caption(row) if row else None

    def add_caption_failure(self, clip_id: int, teacher: str, error: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO caption_failures(clip_id, teacher, error, created) VALUES(?,?,?,?)",
                       (clip_id, teacher, error, now()))

    def caption_failures(self, limit: int = 100) -> list[dict]:
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT * FROM caption_failures ORDER BY id DESC LIMIT ?", (limit,))]

    def uncaptioned_clip_ids(self, teacher: str | None = None) -> list[int]:
        with self._connect() as db:
            if teacher is None:
                sql, args = "SELECT id FROM clips WHERE id NOT IN (SELECT clip_id FROM captions)", ()
            else:
                sql = "SELECT id FROM clips WHERE id NOT IN (SELECT clip_id FROM captions WHERE teacher=?)"
                args = (teacher,)
            return [r[0] for r in db.execute(sql + " ORDER BY id", args)]

    # -- key/value (guidelines markdown, UI preferences) ---------------------------------------
    def get_value(self, key: str, default: str | None = None) -> str | None:
        with self._connect() as db:
            r = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return r[0] if r else default

    def set_value(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO kv(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))

    # -- overview ----------------------------------------------------------------------------
    def change_marker(self) -> str:
        """A token that moves whenever clips, captions, reviews or recordings change.

        Derived stores (the Chroma index) remember the token of the catalogue they mirror and
        compare tokens instead of re-reading every row. Captions are append-only and every
        review save bumps a version, so those parts are exact; a recording-meta edit that keeps
        the same length is missed (an explicit index update still catches it).
        """
        with self._connect() as db:
            row = db.execute("""SELECT
                (SELECT COUNT(*) || ':' || COALESCE(MAX(id), 0) || ':' || TOTAL(id) FROM clips),
                (SELECT COUNT(*) || ':' || COALESCE(MAX(id), 0) FROM captions),
                (SELECT COUNT(*) || ':' || TOTAL(version) FROM reviews),
                (SELECT COUNT(*) || ':' || COALESCE(MAX(id), 0) || ':' || TOTAL(length(meta)) FROM recordings)
            """).fetchone()
        return "|".join(str(v) for v in row)

    def stats(self) -> Stats:
        with self._connect() as db:
            recs = db.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
            clips, secs = db.execute("SELECT COUNT(*), COALESCE(SUM(end - start), 0) FROM clips").fetchone()
            captioned = db.execute("SELECT COUNT(DISTINCT clip_id) FROM captions").fetchone()[0]
            by_status = dict(db.execute(
                "SELECT COALESCE(rv.status,'pending'), COUNT(*) FROM clips c"
                " LEFT JOIN reviews rv ON rv.clip_id=c.id GROUP BY 1").fetchall())
        reviewed = sum(n for s, n in by_status.items() if s != "pending")
        return Stats(recs, clips, secs / 3600.0, captioned, reviewed, by_status)

    # -- health (used by `python -m core doctor`) ----------------------------------------------
    def integrity_problems(self) -> list[str]:
        """Empty when SQLite's integrity check and the foreign-key check both pass."""
        return self.damage() + self.foreign_key_problems()

    def damage(self) -> list[str]:
        """SQLite's integrity check: pages or indexes the file itself has lost."""
        with self._connect() as db:
            return [r[0] for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]

    def foreign_key_problems(self) -> list[str]:
        with self._connect() as db:
            return [f"{r[0]} row {r[1]} points at a missing {r[2]}" for r in db.execute("PRAGMA foreign_key_check")]
