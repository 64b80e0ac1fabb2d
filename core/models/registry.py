"""Which student answers a query: resolve a model name to a loaded Embedder, once per process.

Names:
- "shipped": the student bundled in assets/student (search works on a fresh install);
- "active":  the workspace's active model (catalog.active_model()), else the shipped one;
- a model id registered in the workspace catalogue (a finished training run);
- a path to a checkpoint folder (config.json + model.safetensors): for admins and local tools only
  (`allow_folders=False` refuses it, for callers who may use only the listed models).
A folder's config.json `kind` picks the class: "clap" core.models.clap_student.ClapStudent, "combine"
core.models.combine_student.CombineStudent, none the embedded core.models.student.Student.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from core.store.catalog import ModelRecord
from core.models.embedder import Embedder
from core.store.settings import ASSETS
from core.store.workspace import Workspace

SHIPPED_DIR = ASSETS / "student"
_cache: dict[tuple, Embedder] = {}
_lock = threading.Lock()


def shipped_model_id() -> str | None:
    config = SHIPPED_DIR / "config.json"
    return json.loads(config.read_text()).get("model_id") if config.exists() else None


def resolve_path(name: str = "active", ws: Workspace | None = None, *, allow_folders: bool = True) -> Path:
    """The checkpoint folder a model name points to. Raises KeyError / FileNotFoundError.

    `allow_folders=False` (callers that are not admins) accepts only the listed names, "shipped",
    "active" and the workspace's registered ids, and never looks at the filesystem for the name:
    a folder typed by a visitor is refused with the same words whether it exists or not."""
    if name == "shipped" or name == shipped_model_id():
        if not (SHIPPED_DIR / "config.json").exists():
            raise FileNotFoundError(f"no shipped student in {SHIPPED_DIR}")
        return SHIPPED_DIR
    if name == "active":
        record = ws.catalog.active_model() if ws is not None else None
        return Path(record.path) if record else resolve_path("shipped")
    if not allow_folders:
        if ws is None or name not in {m.id for m in ws.catalog.models()}:
            raise KeyError(f"unknown model {name!r}: pick one from the list")
        return Path(ws.catalog.get_model(name).path)
    folder = Path(name).expanduser()
    if (folder / "config.json").exists():
        return folder.resolve()
    if ws is None:
        raise KeyError(f"{name!r} is not a checkpoint folder, and no workspace was given to look it up")
    return Path(ws.catalog.get_model(name).path)


def get_embedder(name: str = "active", ws: Workspace | None = None, device: str = "cpu", *,
                 allow_folders: bool = True) -> Embedder:
    """A loaded model (cached per folder, weights file time and device: a retrained id reloads).

    On a CPU, a verified ONNX export beside the checkpoint (`python -m training export-onnx`) is
    served with onnxruntime instead; `HEARSAY_ONNX=0` turns that off. `allow_folders`: see resolve_path."""
    from core.models.student import WEIGHTS_NAME, Student
    folder = resolve_path(name, ws, allow_folders=allow_folders)
    weights = folder / WEIGHTS_NAME
    onnx = onnx_export_for(folder, device)
    key = (str(folder), weights.stat().st_mtime_ns if weights.exists() else 0, device,
           onnx.stat().st_mtime_ns if onnx else None)
    with _lock:
        if key not in _cache:
            if onnx:
                from core.models.onnx_student import OnnxStudent
                _cache[key] = OnnxStudent(onnx.parent)
            elif checkpoint_kind(folder) == "clap":          # a fine-tuned CLAP (core.models.clap_student)
                from core.models.clap_student import ClapStudent
                _cache[key] = ClapStudent.load(folder, device=device)
            elif checkpoint_kind(folder) == "combine":       # audio encoder + text model (core.models.combine_student)
                from core.models.combine_student import CombineStudent
                _cache[key] = CombineStudent.load(folder, device=device)
            else:
                _cache[key] = Student.load(folder, device=device)
        return _cache[key]


def checkpoint_kind(folder: Path) -> str:
    """The student kind a checkpoint folder holds: its config.json `kind`, else "embedded"."""
    try:
        return json.loads((folder / "config.json").read_text()).get("kind") or "embedded"
    except (OSError, ValueError):
        return "embedded"


def onnx_export_for(folder: Path, device: str = "cpu") -> Path | None:
    """The config file of the checkpoint's verified ONNX export, when it should be served."""
    if device != "cpu" or os.environ.get("HEARSAY_ONNX", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    from core.models.onnx_student import CONFIG_NAME, find_export
    found = find_export(folder)
    if found is None:
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    return found / CONFIG_NAME


def active_model_id(ws: Workspace | None) -> str:
    return get_embedder("active", ws).model_id


def activate(ws: Workspace, model_id: str) -> ModelRecord:
    """Make `model_id` the model search uses ("shipped" registers the bundled student first)."""
    if model_id == "shipped" or model_id == shipped_model_id():
        sid = shipped_model_id()
        if sid is None:
            raise FileNotFoundError(f"no shipped student in {SHIPPED_DIR}")
        ws.catalog.register_model(sid, str(SHIPPED_DIR), kind="student")
        model_id = sid
    ws.catalog.set_active_model(model_id)
    return ws.catalog.get_model(model_id)


def available_models(ws: Workspace | None) -> list[dict]:
    """Shipped + registered models, for pickers: id, path, active flag, metrics."""
    rows = []
    active = ws.catalog.active_model() if ws is not None else None
    sid = shipped_model_id()
    if sid:
        rows.append({"id": sid, "path": str(SHIPPED_DIR), "shipped": True,
                     "active": active is None or active.id == sid, "metrics": {}})
    for m in (ws.catalog.models() if ws is not None else []):
        if m.id != sid:
            rows.append({"id": m.id, "path": m.path, "shipped": False, "active": m.active, "metrics": m.metrics})
    return rows


def clear_cache() -> None:
    with _lock:
        _cache.clear()
