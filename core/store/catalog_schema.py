"""The catalogue's schema: versioned migrations (`PRAGMA user_version`), how paths are stored
(relative to the workspace root), and the errors that say the file cannot be used.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable

RESTORE_HINT = "restore a backup with `python -m core restore BACKUP.zip NEW_FOLDER`"


class CatalogUnusable(RuntimeError):
    """The catalogue cannot be used as it is; the message says what happened and how to recover."""


class CatalogLost(CatalogUnusable):
    """catalog.db is missing or empty although the workspace holds audio."""


class CatalogCorrupt(CatalogUnusable):
    """catalog.db is not a readable SQLite database (truncated, overwritten)."""


def is_corruption(exc: BaseException) -> bool:
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
