"""The catalogue: every piece of Hearsay's state that is not audio or vectors.

SQLite in WAL mode, one transaction per write, versioned migrations
(`PRAGMA user_version`). Dataclasses in, dataclasses out: no SQL lives
outside this module. Captions and review events are append-only.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

REVIEW_STATUSES = ("pending", "accepted", "edited", "rejected", "skipped")
DECIDED = ("accepted", "edited", "rejected")          # a verdict was given
ACCEPTING = ("accepted", "edited")                  # the clip keeps a caption

RESTORE_HINT = "restore a backup with `python -m core restore BACKUP.zip NEW_FOLDER`"


class CatalogUnusable(RuntimeError):
    """The catalogue cannot be used as it is; the message says what happened and how to recover."""


class CatalogLost(CatalogUnusable):
    """catalog.db is missing or empty although the workspace holds audio."""


class CatalogCorrupt(CatalogUnusable):
    """catalog.db is not a readable SQLite database (truncated, overwritten)."""


def _is_corruption(exc: BaseException) -> bool:
    # OperationalError ("database is locked", "disk full") is a DatabaseError too, but not damage.
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def stored_path(path: str | Path, root: Path) -> str:
    """How a path is kept in the catalogue: relative when it lies under the workspace root, so a
    restored or moved workspace still finds its own files; anything else is kept absolute."""
    text = str(path)
    if not text:
        return text
    text = os.path.abspath(text)          # a relative path was always relative to the current folder
    for candidate in (Path(text), Path(text).resolve()):     # resolved too: the root itself is resolved
        if candidate.is_relative_to(root):
            return candidate.relative_to(root).as_posix()
    return text


def absolute_path(stored: str, root: Path) -> str:
    return str(root / stored) if stored and not Path(stored).is_absolute() else stored


def _relative_paths(db: sqlite3.Connection, root: Path) -> None:
    """v3: rewrite absolute model and run paths as relative ones.

    Paths under this root become relative. A path into another workspace's `models/` or `runs/`
    whose same-named folder exists here (a restored copy of an older backup) points here instead.
    """
    def rewrite(value: str, folder: str) -> str:
        if not value or not Path(value).is_absolute():
            return value
        kept = stored_path(value, root)
        if not Path(kept).is_absolute():
            return kept
        old = Path(value)
        if old.parent.name == folder and (root / folder / old.name).exists():
            return f"{folder}/{old.name}"
        return value

    for model_id, path in db.execute("SELECT id, path FROM models").fetchall():
        db.execute("UPDATE models SET path=? WHERE id=?", (rewrite(path, "models"), model_id))
    for run_id, folder in db.execute("SELECT id, dir FROM runs").fetchall():
        db.execute("UPDATE runs SET dir=? WHERE id=?", (rewrite(folder, "runs"), run_id))


# Each entry moves the schema one version up; never edit a released entry, append a new one.
# An entry is SQL, or a function(db, workspace root) for steps SQL cannot express.
MIGRATIONS: list[str | Callable[[sqlite3.Connection, Path], None]] = [
    # v1
    """
    CREATE TABLE recordings(
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,          -- of the 16 kHz PCM: names the stored file
        file_sha256 TEXT,                      -- of the source bytes: lets a re-import skip decoding
        original_name TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',       -- dataset / folder / zip it came from
        duration REAL NOT NULL,
        sample_rate INTEGER NOT NULL,          -- of the source file
        meta TEXT NOT NULL DEFAULT '{}',
        created TEXT NOT NULL
    );
    CREATE INDEX recordings_file_sha ON recordings(file_sha256);
    CREATE TABLE clips(
        id INTEGER PRIMARY KEY,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        start REAL NOT NULL,
        end REAL NOT NULL,
        UNIQUE(recording_id, start, end)
    );
    CREATE TABLE captions(
        id INTEGER PRIMARY KEY,
        clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        origin TEXT NOT NULL CHECK(origin IN ('teacher', 'annotator', 'import')),
        teacher TEXT, model TEXT, prompt TEXT, annotator TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        confidence REAL,
        cache_key TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX captions_clip ON captions(clip_id);
    CREATE INDEX captions_cache ON captions(cache_key);
    CREATE TABLE caption_failures(
        id INTEGER PRIMARY KEY,
        clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        teacher TEXT NOT NULL, error TEXT NOT NULL, created TEXT NOT NULL
    );
    CREATE TABLE reviews(
        clip_id INTEGER PRIMARY KEY REFERENCES clips(id) ON DELETE CASCADE,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK(status IN ('pending', 'accepted', 'edited', 'rejected', 'skipped')),
        caption_id INTEGER REFERENCES captions(id),
        annotator TEXT, reason TEXT,
        version INTEGER NOT NULL DEFAULT 0,
        updated TEXT
    );
    CREATE INDEX reviews_status ON reviews(status);
    CREATE TABLE review_events(
        id INTEGER PRIMARY KEY,
        clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        annotator TEXT, action TEXT NOT NULL,
        before TEXT NOT NULL, after TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX review_events_clip ON review_events(clip_id);
    CREATE TABLE models(
        id TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'student',
        run_id INTEGER, metrics TEXT NOT NULL DEFAULT '{}',
        active INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL
    );
    CREATE TABLE runs(
        id INTEGER PRIMARY KEY,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK(status IN ('queued', 'running', 'finished', 'failed', 'cancelled')),
        config TEXT NOT NULL DEFAULT '{}', dir TEXT NOT NULL DEFAULT '', pid INTEGER,
        model_id TEXT, error TEXT, created TEXT NOT NULL, updated TEXT NOT NULL
    );
    CREATE TABLE evaluations(
        id INTEGER PRIMARY KEY, model TEXT NOT NULL, data TEXT NOT NULL,
        fingerprint TEXT NOT NULL, metrics TEXT NOT NULL, created TEXT NOT NULL
    );
    CREATE TABLE kv(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # v2: per-annotator decisions for overlap review (each clip judged by N people), append-only
    """
    CREATE TABLE annotations(
        id INTEGER PRIMARY KEY,
        clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        annotator TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK(status IN ('pending', 'accepted', 'edited', 'rejected', 'skipped')),
        caption_id INTEGER REFERENCES captions(id),
        reason TEXT,
        action TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX annotations_clip ON annotations(clip_id, annotator);
    CREATE INDEX review_events_annotator ON review_events(annotator);
    """,
    # v3: models.path and runs.dir relative to the workspace root (see _relative_paths above)
    _relative_paths,
]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ConflictError(RuntimeError):
    """Someone else saved this review first; `current` is what they saved."""

    def __init__(self, current: "Review"):
        super().__init__(f"clip {current.clip_id} was changed by {current.annotator or 'someone'} "
                         f"(version {current.version})")
        self.current = current


@dataclass
class Recording:
    id: int
    sha256: str
    original_name: str
    source: str
    duration: float
    sample_rate: int
    meta: dict = field(default_factory=dict)
    file_sha256: str | None = None
    created: str = ""


@dataclass
class Clip:
    id: int
    recording_id: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Caption:
    id: int
    clip_id: int
    text: str
    origin: str                         # teacher | annotator | import
    teacher: str | None = None          # backend name, e.g. "embedded"
    model: str | None = None            # model id inside the backend
    prompt: str | None = None           # prompt or composer version
    annotator: str | None = None
    tags: dict = field(default_factory=dict)   # tag -> score
    confidence: float | None = None
    cache_key: str | None = None
    created: str = ""


@dataclass
class Review:
    clip_id: int
    status: str = "pending"
    caption_id: int | None = None
    annotator: str | None = None
    reason: str | None = None
    version: int = 0
    updated: str | None = None


@dataclass
class ReviewEvent:
    id: int
    clip_id: int
    annotator: str | None
    action: str
    before: dict
    after: dict
    created: str


@dataclass
class Annotation:
    """One person's decision on a clip in overlap review; append-only, the newest per person counts."""
    id: int
    clip_id: int
    annotator: str
    status: str
    caption_id: int | None
    reason: str | None
    action: str
    created: str


@dataclass
class ClipRow:
    """A clip joined with what the tables show next to it."""
    clip: Clip
    recording: Recording
    caption: Caption | None
    review: Review


# SQL for a clip's caption id, given the clip `c` and its review `rv` (LEFT JOINed):
# current: the one the review chose, else the newest;
CURRENT_CAPTION = "COALESCE(rv.caption_id, (SELECT MAX(id) FROM captions WHERE clip_id = c.id))"
# published (core/auth/published.py): the review's choice once accepted or edited, nothing once rejected, else the
# newest caption that no annotator wrote (an annotator's text is published only by a decided review).
_NEWEST_TEACHER = "(SELECT MAX(id) FROM captions WHERE clip_id = c.id AND origin != 'annotator')"
PUBLISHED_CAPTION = f"""(CASE WHEN rv.status IN ('accepted', 'edited') THEN COALESCE(rv.caption_id, {_NEWEST_TEACHER})
    WHEN rv.status = 'rejected' THEN NULL ELSE {_NEWEST_TEACHER} END)"""


@dataclass
class ClipQuery:
    text: str = ""                      # substring of file name or caption
    source: str | None = None
    status: str | None = None           # a review status, or "uncaptioned"
    recording_id: int | None = None
    limit: int = 50
    offset: int = 0
    published: bool = False             # caption = the published one (what visitors read), not the current one


@dataclass
class ModelRecord:
    id: str
    path: str
    kind: str = "student"
    run_id: int | None = None
    metrics: dict = field(default_factory=dict)
    active: bool = False
    created: str = ""


@dataclass
class Run:
    id: int
    status: str
    config: dict
    dir: str
    pid: int | None
    model_id: str | None
    error: str | None
    created: str
    updated: str


@dataclass
class Evaluation:
    id: int
    model: str
    data: str
    fingerprint: str
    metrics: dict
    created: str


@dataclass
class Stats:
    recordings: int
    clips: int
    hours: float
    captioned: int
    reviewed: int
    by_status: dict


def _recording(r: sqlite3.Row) -> Recording:
    return Recording(r["id"], r["sha256"], r["original_name"], r["source"], r["duration"],
                     r["sample_rate"], json.loads(r["meta"]), r["file_sha256"], r["created"])


def _clip(r: sqlite3.Row) -> Clip:
    return Clip(r["id"], r["recording_id"], r["start"], r["end"])


def _caption(r: sqlite3.Row) -> Caption:
    return Caption(r["id"], r["clip_id"], r["text"], r["origin"], r["teacher"], r["model"], r["prompt"],
                   r["annotator"], json.loads(r["tags"]), r["confidence"], r["cache_key"], r["created"])


def _review(r: sqlite3.Row | None, clip_id: int) -> Review:
    if r is None:
        return Review(clip_id)
    return Review(r["clip_id"], r["status"], r["caption_id"], r["annotator"], r["reason"], r["version"], r["updated"])


def _annotation(r: sqlite3.Row) -> Annotation:
    return Annotation(r["id"], r["clip_id"], r["annotator"], r["status"], r["caption_id"], r["reason"],
                      r["action"], r["created"])


def _run(r: sqlite3.Row, root: Path) -> Run:
    return Run(r["id"], r["status"], json.loads(r["config"]), absolute_path(r["dir"], root), r["pid"],
               r["model_id"], r["error"], r["created"], r["updated"])


class Catalog:
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
            if not _is_corruption(exc):
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
        with self._connect() as db:
            row = db.execute("SELECT * FROM recordings WHERE id=?", (recording_id,)).fetchone()
        if row is None:
            raise KeyError(f"no recording {recording_id}")
        return _recording(row)

    def update_recording_meta(self, recording_id: int, meta: dict) -> None:
        with self.transaction() as db:
            db.execute("UPDATE recordings SET meta=? WHERE id=?", (json.dumps(meta, ensure_ascii=False), recording_id))

    def recordings(self) -> list[Recording]:
        with self._connect() as db:
            return [_recording(r) for r in db.execute("SELECT * FROM recordings ORDER BY id")]

    def get_clip(self, clip_id: int) -> Clip:
        with self._connect() as db:
            row = db.execute("SELECT * FROM clips WHERE id=?", (clip_id,)).fetchone()
        if row is None:
            raise KeyError(f"no clip {clip_id}")
        return _clip(row)

    def clips(self, recording_id: int | None = None) -> list[Clip]:
        with self._connect() as db:
            if recording_id is None:
                rows = db.execute("SELECT * FROM clips ORDER BY id")
            else:
                rows = db.execute("SELECT * FROM clips WHERE recording_id=? ORDER BY id", (recording_id,))
            return [_clip(r) for r in rows]

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
        with self._connect() as db:
            row = db.execute("SELECT * FROM captions WHERE id=?", (caption_id,)).fetchone()
        if row is None:
            raise KeyError(f"no caption {caption_id}")
        return _caption(row)

    def published_captions(self, clip_ids: Sequence[int] | None = None) -> dict[int, Caption]:
        """clip id → the caption visitors may read (PUBLISHED_CAPTION); clips without one are left out."""
        with self._connect() as db:
            rows = db.execute(f"""SELECT cap.* FROM clips c LEFT JOIN reviews rv ON rv.clip_id = c.id
                                  JOIN captions cap ON cap.id = {PUBLISHED_CAPTION}""").fetchall()
        wanted = None if clip_ids is None else set(clip_ids)
        return {r["clip_id"]: _caption(r) for r in rows if wanted is None or r["clip_id"] in wanted}

    def current_captions(self, clip_ids: Sequence[int] | None = None) -> dict[int, Caption]:
        """clip id → its current caption (the review's choice, else the newest)."""
        with self._connect() as db:
            rows = db.execute("""
                SELECT cap.* FROM clips c
                LEFT JOIN reviews rv ON rv.clip_id = c.id
                JOIN captions cap ON cap.id = COALESCE(rv.caption_id,
                    (SELECT MAX(id) FROM captions WHERE clip_id = c.id))""").fetchall()
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
            db.execute(
                "INSERT INTO reviews(clip_id, status, caption_id, annotator, reason, version, updated)"
                " VALUES(?,?,?,?,?,?,?) ON CONFLICT(clip_id) DO UPDATE SET status=excluded.status,"
                " caption_id=excluded.caption_id, annotator=excluded.annotator, reason=excluded.reason,"
                " version=excluded.version, updated=excluded.updated",
                (clip_id, status, caption_id, annotator, reason, after.version, after.updated))
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
        with self._connect() as db:
            if clip_id is None:
                rows = db.execute("SELECT * FROM annotations ORDER BY id")
            else:
                rows = db.execute("SELECT * FROM annotations WHERE clip_id=? ORDER BY id", (clip_id,))
            return [_annotation(r) for r in rows]

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
                db.execute("INSERT INTO reviews(clip_id, status, caption_id, annotator, reason, version, updated)"
                           " VALUES(?,?,?,?,?,?,?) ON CONFLICT(clip_id) DO UPDATE SET status=excluded.status,"
                           " caption_id=excluded.caption_id, annotator=excluded.annotator, reason=excluded.reason,"
                           " version=excluded.version, updated=excluded.updated",
                           (clip_id, r.get("status", "pending"), r.get("caption_id"), r.get("annotator"),
                            r.get("reason"), int(r.get("version") or 0), r.get("updated")))
        return ids

    # -- models, runs, evaluations ----------------------------------------------------------------
    def register_model(self, model_id: str, path: str, *, kind: str = "student", run_id: int | None = None,
                       metrics: dict | None = None) -> ModelRecord:
        with self.transaction() as db:
            db.execute("INSERT INTO models(id, path, kind, run_id, metrics, created) VALUES(?,?,?,?,?,?)"
                       " ON CONFLICT(id) DO UPDATE SET path=excluded.path, metrics=excluded.metrics",
                       (model_id, stored_path(path, self.root), kind, run_id, json.dumps(metrics or {}), now()))
        return self.get_model(model_id)

    def get_model(self, model_id: str) -> ModelRecord:
        with self._connect() as db:
            r = db.execute("SELECT * FROM models WHERE id=?", (model_id,)).fetchone()
        if r is None:
            raise KeyError(f"no model {model_id!r}")
        return ModelRecord(r["id"], absolute_path(r["path"], self.root), r["kind"], r["run_id"],
                           json.loads(r["metrics"]), bool(r["active"]), r["created"])

    def models(self) -> list[ModelRecord]:
        with self._connect() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM models ORDER BY created, id")]
        return [self.get_model(i) for i in ids]

    def set_active_model(self, model_id: str) -> None:
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone() is None:
                raise KeyError(f"no model {model_id!r}")
            db.execute("UPDATE models SET active = (id = ?)", (model_id,))

    def active_model(self) -> ModelRecord | None:
        with self._connect() as db:
            r = db.execute("SELECT id FROM models WHERE active=1").fetchone()
        return self.get_model(r[0]) if r else None

    def add_run(self, config: dict, dir: str = "") -> Run:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO runs(config, dir, created, updated) VALUES(?,?,?,?)",
                             (json.dumps(config), stored_path(dir, self.root), now(), now()))
            return _run(db.execute("SELECT * FROM runs WHERE id=?", (cur.lastrowid,)).fetchone(), self.root)

    def update_run(self, run_id: int, **fields) -> Run:
        allowed = {"status", "dir", "pid", "model_id", "error", "config"}
        if not set(fields) <= allowed:
            raise ValueError(f"cannot update {set(fields) - allowed}")
        if "config" in fields:
            fields["config"] = json.dumps(fields["config"])
        if "dir" in fields:
            fields["dir"] = stored_path(fields["dir"], self.root)
        with self.transaction() as db:
            sets = ", ".join(f"{k}=?" for k in fields) + ", updated=?"
            db.execute(f"UPDATE runs SET {sets} WHERE id=?", [*fields.values(), now(), run_id])
            return _run(db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone(), self.root)

    def get_run(self, run_id: int) -> Run:
        with self._connect() as db:
            r = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"no run {run_id}")
        return _run(r, self.root)

    def runs(self) -> list[Run]:
        with self._connect() as db:
            return [_run(r, self.root) for r in db.execute("SELECT * FROM runs ORDER BY id DESC")]

    def add_evaluation(self, model: str, data: str, fingerprint: str, metrics: dict) -> Evaluation:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO evaluations(model, data, fingerprint, metrics, created) VALUES(?,?,?,?,?)",
                             (model, data, fingerprint, json.dumps(metrics), now()))
            eid = cur.lastrowid
        return next(e for e in self.evaluations() if e.id == eid)

    def evaluations(self) -> list[Evaluation]:
        with self._connect() as db:
            return [Evaluation(r["id"], r["model"], r["data"], r["fingerprint"], json.loads(r["metrics"]),
                               r["created"]) for r in db.execute("SELECT * FROM evaluations ORDER BY id DESC")]

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

    def clear_active_model(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE models SET active = 0")
