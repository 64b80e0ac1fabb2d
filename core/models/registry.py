"""The one model registry: model names → loaded Embedders, the picker's choices, the active model.

Names:
- "shipped": the student bundled in assets/student (search works on a fresh install);
- "active":  the workspace's active model (catalog.active_model()), else the shipped one;
- a model id registered in the workspace catalogue (a finished training run);
- a path to a checkpoint folder (config.json + model.safetensors): for admins and local tools only
  (`allow_folders=False` refuses it, for callers who may use only the listed models).
A folder's config.json `kind` picks the class: "clap" core.models.clap_student.ClapStudent, "combine"
core.models.combine_student.CombineStudent, none the embedded core.models.student.Student.

Every "this model cannot be had here" is a ModelUnavailable whose message says what is missing and
where to put it; the CLI (core/__main__.py) and the UI turn it into one line / a gr.Error.
"""
from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path

from core.store.catalog import ModelRecord
from core.models.embedder import Embedder, ModelUnavailable  # noqa: F401 - re-exported: the one "model missing" error
from core.store.settings import SHIPPED_MODEL
from core.store.workspace import Workspace

SHIPPED_DIR = SHIPPED_MODEL
_lock = threading.Lock()       # one load per model even when two requests ask for it at once


def shipped_model_id() -> str | None:
    config = SHIPPED_DIR / "config.json"
    return json.loads(config.read_text()).get("model_id") if config.exists() else None


def _shipped_dir() -> Path:
    if not (SHIPPED_DIR / "config.json").exists():
        raise ModelUnavailable(f"no student model is available: no shipped student in {SHIPPED_DIR} "
                               "(it needs config.json and model.safetensors); reinstall Hearsay's assets "
                               "or train one in the Train tab")
    return SHIPPED_DIR


def resolve_path(name: str = "active", ws: Workspace | None = None, *, allow_folders: bool = True) -> Path:
    """The checkpoint folder a model name points to. Raises ModelUnavailable.

    `allow_folders=False` (callers that are not admins) accepts only the listed names, "shipped",
    "active" and the workspace's registered ids, and never looks at the filesystem for the name:
    a folder typed by a visitor is refused with the same words whether it exists or not."""
    if name == "shipped" or name == shipped_model_id():
        return _shipped_dir()
    if name == "active":
        record = ws.catalog.active_model() if ws is not None else None
        return Path(record.path) if record else _shipped_dir()
    if not allow_folders:
        if ws is None or name not in {m.id for m in ws.catalog.models()}:
            raise ModelUnavailable(f"unknown model {name!r}: pick one from the list")
        return Path(ws.catalog.get_model(name).path)
    folder = Path(name).expanduser()
    if (folder / "config.json").exists():
        return folder.resolve()
    if ws is None:
        raise ModelUnavailable(f"model {name!r} is not available: it is not a checkpoint folder (config.json + "
                               "model.safetensors), and no workspace was given to look it up")
    try:
        return Path(ws.catalog.get_model(name).path)
    except KeyError:
        raise ModelUnavailable(f"model {name!r} is not available: neither a checkpoint folder nor a registered "
                               f"model; pick one of {', '.join(choices(ws, 'active'))} (or train one in the "
                               "Train tab)") from None


def get_embedder(name: str = "active", ws: Workspace | None = None, device: str = "cpu", *,
                 allow_folders: bool = True) -> Embedder:
    """A loaded model (cached per folder, weights file time and device: a retrained id reloads).

    On a CPU, a verified ONNX export beside the checkpoint (`python -m training export-onnx`) is
    served with onnxruntime instead; `HEARSAY_ONNX=0` turns that off. `allow_folders`: see resolve_path."""
    from core.models.student import WEIGHTS_NAME
    folder = resolve_path(name, ws, allow_folders=allow_folders)
    if not (folder / "config.json").exists():        # a registered model whose folder has gone
        raise ModelUnavailable(f"model {name!r} is not available: its checkpoint folder {folder} has no "
                               "config.json; put the checkpoint back there or pick another model")
    weights = folder / WEIGHTS_NAME
    onnx = onnx_export_for(folder, device)
    stamp = (weights.stat().st_mtime_ns if weights.exists() else 0, onnx.stat().st_mtime_ns if onnx else None)
    with _lock:
        return _load(str(folder), device, str(onnx) if onnx else None, stamp)


@lru_cache(maxsize=None)
def _load(folder: str, device: str, onnx: str | None, stamp: tuple) -> Embedder:
    """The model class the folder's kind names; `stamp` (file times) makes a rewritten checkpoint a new key."""
    if onnx:                        # OnnxStudent, or OnnxPretrained for a clap / combine export
        from core.models.onnx_student import load_export
        return load_export(Path(onnx).parent)
    return load_torch(folder, device)


def load_torch(folder: str, device: str = "cpu") -> Embedder:
    """The PyTorch model of the class the folder's kind names (never its ONNX export)."""
    kind = checkpoint_kind(Path(folder))
    if kind == "clap":              # a fine-tuned CLAP (core.models.clap_student)
        from core.models.clap_student import ClapStudent
        return ClapStudent.load(folder, device=device)
    if kind == "combine":           # audio encoder + text model (core.models.combine_student)
        from core.models.combine_student import CombineStudent
        return CombineStudent.load(folder, device=device)
    from core.models.student import Student
    return Student.load(folder, device=device)


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
    return found / CONFIG_NAME


def activate(ws: Workspace, model_id: str) -> ModelRecord:
    """Make `model_id` the model search uses ("shipped" registers the bundled student first)."""
    if model_id == "shipped" or model_id == shipped_model_id():
        _shipped_dir()
        sid = shipped_model_id()
        ws.catalog.register_model(sid, str(SHIPPED_DIR), kind="student")
        model_id = sid
    try:
        ws.catalog.set_active_model(model_id)
        return ws.catalog.get_model(model_id)
    except KeyError:
        raise ModelUnavailable(f"model {model_id!r} is not registered in this workspace; pick one of "
                               f"{', '.join(choices(ws))}") from None


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


def choices(ws: Workspace | None, *first: str, shipped: bool = True) -> list[str]:
    """What a model picker offers: the names in `first` ("active", "shipped", ...), then every model id
    (the shipped student's unless `shipped=False`, then the workspace's registered ones), each once."""
    ids = [m["id"] for m in available_models(ws) if shipped or not m["shipped"]]
    return list(dict.fromkeys([*first, *ids]))


def clear_cache() -> None:
    """Forget every loaded model (tests; a checkpoint rewritten within one file-time tick)."""
    with _lock:
        _load.cache_clear()
