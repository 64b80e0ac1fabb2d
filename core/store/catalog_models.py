"""The catalogue's model registry, training runs and evaluations. A part of `Catalog`."""
from __future__ import annotations

import json

from core.store.catalog_records import Evaluation, ModelRecord, Run, _run, now
from core.store.catalog_schema import absolute_path, stored_path


class ModelTables:
    """Models, runs and evaluations (mixed into `Catalog`, which supplies the connection and root)."""

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
        return _run(self._one("runs", run_id, "run"), self.root)

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

    def clear_active_model(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE models SET active = 0")
