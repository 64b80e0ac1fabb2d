"""Training runs as background jobs: what the Train tab calls.

A run is `python -m training train ...` in its own process group (never inside the Gradio
worker), logging to runs/run-NNNN/log.txt and metrics.jsonl. Cancel sends SIGTERM to the
group (the trainer stops after its current step, keeping the last epoch's checkpoint) and
SIGKILL if it does not go within a grace period. A run whose process vanished is marked failed
the next time anyone looks.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.store.catalog import Run
from core.store.processes import pid_alive   # also what callers of training.jobs.pid_alive get
from core.store.settings import ROOT, resolve_device
from core.store.workspace import Workspace
from training.loop import STATE_NAME, register_checkpoint
from training.train import TrainConfig

LOG_NAME, METRICS_NAME, LOCK_NAME = "log.txt", "metrics.jsonl", "run.lock"
_procs: dict[int, subprocess.Popen] = {}       # run id → child, for runs this process started
_lock = threading.Lock()


def run_dir(ws: Workspace, run_id: int) -> Path:
    return ws.run_dir(run_id)


def launch(ws: Workspace, config: dict | TrainConfig) -> Run:
    """Start a new training run in the background; returns its catalogue row (status running)."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    run = ws.catalog.add_run(cfg.to_dict())
    folder = run_dir(ws, run.id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    ws.catalog.update_run(run.id, dir=str(folder))
    return _spawn(ws, run.id, ["--config", str(folder / "config.json")])


def resume(ws: Workspace, run_id: int, epochs: int | None = None) -> Run:
    """Continue a cancelled or failed run from its last checkpoint."""
    folder = run_dir(ws, run_id)
    if not any((folder / d / STATE_NAME).exists() for d in ("last", "last.old")):
        raise FileNotFoundError(f"run {run_id} has no checkpoint to resume from")
    if is_running(ws, run_id):
        raise RuntimeError(f"run {run_id} is still running")
    extra = ["--resume"] + (["--epochs", str(epochs)] if epochs else [])
    return _spawn(ws, run_id, extra)


def _spawn(ws: Workspace, run_id: int, extra: list[str]) -> Run:
    folder = run_dir(ws, run_id)
    cmd = [sys.executable, "-m", "training", "train", "--workspace", str(ws.root), "--run-dir", str(folder),
           "--run-id", str(run_id), *extra]
    # `python -m` from the repository root finds core/ and training/ there (pyproject.toml): no PYTHONPATH
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(folder / LOG_NAME, "ab")
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)     # its own process group: Cancel kills it all
    log.close()
    with _lock:
        _procs[run_id] = proc
    run = ws.catalog.update_run(run_id, status="running", pid=proc.pid, error=None)
    threading.Thread(target=_watch, args=(ws, run_id, proc), daemon=True, name=f"train-run-{run_id}").start()
    return run


def _watch(ws: Workspace, run_id: int, proc: subprocess.Popen) -> None:
    """Reap the child and make sure its row tells how it ended, whatever the child managed to write."""
    code = proc.wait()
    with _lock:
        _procs.pop(run_id, None)
    run = ws.catalog.get_run(run_id)
    if run.status in ("running", "queued"):
        if code == 0:
            ws.catalog.update_run(run_id, status="finished")
        elif code in (130, -signal.SIGTERM, -signal.SIGKILL):
            ws.catalog.update_run(run_id, status="cancelled")
        else:
            ws.catalog.update_run(run_id, status="failed", error=f"exit code {code}: {log_tail(ws, run_id, 3)}")


class RunBusy(RuntimeError):
    """Another live process is training this run."""


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder for one training process; the OS drops the lock when the process dies (kill -9 too)."""
    from filelock import FileLock, Timeout
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunBusy(f"{folder.name} is already being trained by another process: "
                      "wait for it, or cancel it first") from None
    try:
        yield
    finally:
        lock.release()


def is_running(ws: Workspace, run_id: int) -> bool:
    with _lock:
        proc = _procs.get(run_id)
    if proc is not None:
        return proc.poll() is None
    run = ws.catalog.get_run(run_id)
    return run.status == "running" and pid_alive(run.pid)


def cancel(ws: Workspace, run_id: int, grace: float = 15.0) -> Run:
    """Stop a run: SIGTERM to its process group, SIGKILL after `grace` seconds. Its last checkpoint stays."""
    run = ws.catalog.get_run(run_id)
    with _lock:
        proc = _procs.get(run_id)
    pid = proc.pid if proc is not None else run.pid
    if pid and (proc is not None or _owns_group(pid)):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and (proc.poll() is None if proc is not None else pid_alive(pid)):
            time.sleep(0.1)
        if proc.poll() is None if proc is not None else pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            if proc is not None:
                proc.wait(timeout=10)
    if ws.catalog.get_run(run_id).status in ("running", "queued"):
        ws.catalog.update_run(run_id, status="cancelled")
    return ws.catalog.get_run(run_id)


def _owns_group(pid: int) -> bool:
    """Only signal a group that is this pid's own (a run we started), never a recycled pid's parent group."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def reconcile(ws: Workspace) -> None:
    """Runs still marked running whose process is gone (the app restarted, the machine rebooted) → failed."""
    for run in ws.catalog.runs():
        if run.status == "running" and not is_running(ws, run.id):
            ws.catalog.update_run(run.id, status="failed", error="the training process ended unexpectedly")


def read_metrics(ws: Workspace, run_id: int) -> list[dict]:
    """metrics.jsonl rows; a half-written last line is skipped."""
    path = run_dir(ws, run_id) / METRICS_NAME
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def log_tail(ws: Workspace, run_id: int, lines: int = 40) -> str:
    path = run_dir(ws, run_id) / LOG_NAME
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 64_000))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


# A hub id as huggingface_hub spells it: owner/name of letters, digits, - _ . (no '..', not starting with '.')
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
BACKBONE_KINDS = ("embedded", "clap", "combine")


def _source_ok(ident: str) -> bool:
    return (bool(_HUB_ID.match(ident)) and ".." not in ident) or Path(ident).expanduser().is_dir()


def backbone_spec(kind: str, ident: str = "") -> str:
    """The Train tab's backbone choice → TrainConfig.backbone; ValueError naming what is wrong.

    Launching is admin-only, but a typed id still has to be a hub id (`owner/name`) or a folder that
    exists here, so a typo fails now and not minutes into a background run."""
    kind, ident = (kind or "embedded").strip(), (ident or "").strip()
    if kind not in BACKBONE_KINDS:
        raise ValueError(f"unknown student backbone {kind!r}: pick one of {', '.join(BACKBONE_KINDS)}")
    if kind == "embedded":
        return "embedded"
    if kind == "clap":
        if ident and not _source_ok(ident):
            raise ValueError(f"CLAP model {ident!r} is neither a hub id (owner/name, e.g. laion/clap-htsat-unfused) "
                             "nor an existing folder on the server")
        return f"clap:{ident}" if ident else "clap"
    from core.models.combine_student import MINILM, parse
    try:
        audio, text = parse(ident)
    except ValueError:
        raise ValueError("combine needs an audio encoder: <audio>+<text>, e.g. facebook/wav2vec2-base+minilm") from None
    for what, src in (("audio encoder", audio), ("text model", text)):
        if not (src == MINILM and what == "text model") and not _source_ok(src):
            raise ValueError(f"{what} {src!r} is neither a hub id (owner/name) nor an existing folder on the server"
                             + (f" (or '{MINILM}' for the packaged MiniLM)" if what == "text model" else ""))
    return f"combine:{ident}"


def _run_device(ws: Workspace, run_id: int, configured: str) -> str:
    """The device the trainer reported in its log ('device cuda:0, precision bf16'), else the one it will pick."""
    path = run_dir(ws, run_id) / LOG_NAME
    if path.exists():
        with path.open("rb") as fh:
            head = fh.read(64_000).decode("utf-8", "replace")
        found = re.search(r"device (\S+), precision (\S+?),", head)
        if found:
            return f"{found.group(1)} ({found.group(2)} precision)" if found.group(2) != "no" else found.group(1)
    return resolve_device(configured or "auto")


def _peak_memory(rows: list[dict]) -> str | None:
    """The highest peak the epochs recorded (the CLAP / combine loop writes one per epoch)."""
    for key, label in (("peak_gpu_memory_gb", "GPU memory"), ("peak_memory_gb", "memory")):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            return f"{label} {max(values):g} GB"
    return None


def run_summary(ws: Workspace, run_id: int) -> dict:
    """What the tab shows about one run: status, progress, elapsed / ETA, best validation numbers."""
    run = ws.catalog.get_run(run_id)
    rows = read_metrics(ws, run_id)
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    last = epochs[-1] if epochs else {}
    total = run.config.get("epochs")
    folder = run_dir(ws, run_id)
    return {"id": run.id, "status": run.status, "epoch": last.get("epoch", 0), "epochs": total,
            "elapsed": last.get("elapsed") or (rows[-1].get("elapsed") if rows else None),
            "eta": last.get("eta"), "loss": last.get("loss"), "val_t2a_r1": last.get("val_t2a_r1"),
            "val_zero_shot": last.get("val_zero_shot"), "model_id": run.model_id, "error": run.error,
            "has_checkpoint": (folder / "best" / "config.json").exists() or (folder / "last" / "config.json").exists(),
            "created": run.created, "backbone": run.config.get("backbone") or "embedded",
            "device": _run_device(ws, run_id, run.config.get("device", "auto")), "peak_memory": _peak_memory(epochs),
            "clips_per_second": last.get("clips_per_second")}


def promote(ws: Workspace, run_id: int) -> str:
    """"Make active": register the run's best (else last) checkpoint if needed and make it the search model."""
    from core.models.registry import activate, clear_cache
    run = ws.catalog.get_run(run_id)
    model_id = run.model_id
    if not model_id:
        folder = run_dir(ws, run_id)
        ckpt = folder / "best" if (folder / "best" / "config.json").exists() else folder / "last"
        if not (ckpt / "config.json").exists():
            raise FileNotFoundError(f"run {run_id} has no checkpoint yet")
        rows = [r for r in read_metrics(ws, run_id) if r.get("kind") == "epoch"]
        metrics = {k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("val_")}
        model_id, _ = register_checkpoint(ws, ckpt, run_id, metrics)
    activate(ws, model_id)
    clear_cache()
    return model_id


def device_summary() -> tuple[str, bool]:
    """(what training will run on, whether that is only a CPU)."""
    device = resolve_device("auto")
    if device == "cuda":
        import torch
        return f"GPU: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)", False
    if device == "mps":
        return "Apple GPU (MPS)", False
    cores = os.cpu_count() or 1
    return f"CPU only ({cores} cores): fine for the cached-feature student; a GPU is needed for text-layer " \
           "fine-tuning at scale", True
