"""The epoch loop every student backbone shares, around one `TrainState` (as open_clip's train loop).

A backbone (training/train.py for `embedded`, training/train_clap.py for `clap` / `combine`) builds its
model, data and loss, then calls `prepare` (optimizer, cosine schedule, resumed counters, Accelerate) and
`fit`: per epoch `train_one_epoch`, then on the main process `validate` and `save` (`last/` with the
optimizer state for `--resume`, `best/` when it improved), early stopping with keep=best, and at the end
the registration of `best/` as a model. Checkpoint files, metrics rows and log lines are the same for
every backbone; the backbone's own parts are the hooks in TrainState.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.store.files import copy_dir_atomic

STATE_NAME = "trainer_state.pt"


@dataclass
class TrainResult:
    run_id: int | None
    run_dir: Path
    status: str                          # finished | cancelled | failed
    epochs_done: int
    best: dict
    model_id: str | None = None
    model_path: Path | None = None


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, row: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def say(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


@dataclass
class TrainState:
    """One run in progress: where it writes, the backbone's hooks, the prepared model / optimizer /
    loader, and the counters a checkpoint carries over to a resumed run."""
    ws: Any
    cfg: Any                                        # training.train.TrainConfig
    accelerator: Any
    run_id: int | None
    run_dir: Path
    log: MetricsLog
    should_stop: Callable[[], bool]
    started: float
    train_pairs: list
    val_pairs: list
    # the backbone's parts
    compute_loss: Callable[["TrainState", dict], torch.Tensor]      # one batch → its loss (prepared model)
    validate: Callable[[Any], dict]                                # unwrapped model → val_* metrics
    begin_epoch: Callable[[int], None]                             # reseed the dataset's augmentation
    epoch_extras: Callable[[int, float], dict] = lambda seen, seconds: {}   # more metrics per epoch row
    describe: Callable[[dict], str] = lambda row: ""               # more words for the epoch's log line
    card_training: dict = field(default_factory=dict)              # more lines for the model card
    lr_group: int = -1                                             # the param group whose lr is logged
    start_weights: dict | None = None      # trainable weights before training (the run's, also when resumed):
                                           # best/ saves start + cfg.wise·(trained − start) (training/anchor.py)
    # set by prepare()
    model: Any = None
    raw: Any = None
    optimizer: Any = None
    scheduler: Any = None
    loader: Any = None
    # counters (saved in last/trainer_state.pt)
    start_epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=dict)
    bad: int = 0
    status: str = "finished"
    completed: int = 0
    epoch_times: list = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def split_pairs(cfg, pairs: list, main: bool, note: str = "") -> tuple[list, list]:
    """Held-out recordings for validation; at least two training pairs or a clear error."""
    from training import data as D
    train_pairs, val_pairs = D.split_by_recording(pairs, cfg.val_fraction, cfg.seed)
    if len(train_pairs) < 2:
        raise ValueError(f"only {len(train_pairs)} training pair(s): caption and review some clips first")
    if main:
        say(f"{len(train_pairs)} training pairs, {len(val_pairs)} validation pairs "
            f"({len({p.recording_id for p in val_pairs})} held-out recordings)" + note)
    return train_pairs, val_pairs


def prepare(state: TrainState, model, loader, groups: list[dict], saved: dict | None) -> TrainState:
    """AdamW over `groups`, warm-up + cosine schedule, the counters of a resumed run, then Accelerate."""
    cfg = state.cfg
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, steps_per_epoch * cfg.epochs))
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.start_epoch, state.step = saved["epoch"], saved["step"]
        state.best, state.bad = json.loads(saved["best"]), saved["bad_epochs"]
        if state.main:
            say(f"resuming after epoch {state.start_epoch}")
    state.completed = state.start_epoch
    state.model, state.optimizer, state.loader, state.scheduler = state.accelerator.prepare(
        model, optimizer, loader, scheduler)
    state.raw = state.accelerator.unwrap_model(state.model)
    return state


def train_one_epoch(state: TrainState, epoch: int) -> dict | None:
    """One pass over the loader; the epoch's metrics row, or None when `should_stop` cancelled it."""
    acc, cfg, model, raw = state.accelerator, state.cfg, state.model, state.raw
    t0 = time.time()
    state.begin_epoch(epoch)
    if hasattr(state.loader, "set_epoch"):
        state.loader.set_epoch(epoch)
    running, seen = 0.0, 0
    for batch in state.loader:
        if state.should_stop():
            state.status = "cancelled"
            return None
        with acc.accumulate(model):
            loss = state.compute_loss(state, batch)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 1.0)
            state.optimizer.step()
            state.scheduler.step()
            state.optimizer.zero_grad()
        with torch.no_grad():
            raw.logit_scale.clamp_(0, math.log(100))
        running += float(loss.detach()) * len(batch["weight"])
        seen += len(batch["weight"])
        if acc.sync_gradients:
            state.step += 1
            if state.main and state.step % cfg.log_every == 0:
                state.log.write({"kind": "train", "epoch": epoch + 1, "step": state.step, "loss": float(loss.detach()),
                                 "lr": state.scheduler.get_last_lr()[state.lr_group],
                                 "temperature": float(1 / raw.logit_scale.detach().exp()),
                                 "elapsed": time.time() - state.started})
    state.epoch_times.append(time.time() - t0)
    return {"kind": "epoch", "epoch": epoch + 1, "step": state.step, "loss": running / max(1, seen),
            "lr": state.scheduler.get_last_lr()[state.lr_group], "temperature": float(1 / raw.logit_scale.detach().exp()),
            "epoch_seconds": state.epoch_times[-1], "elapsed": time.time() - state.started,
            "eta": float(np.mean(state.epoch_times)) * (cfg.epochs - epoch - 1),
            **state.epoch_extras(seen, state.epoch_times[-1])}


def validate(state: TrainState, row: dict) -> bool:
    """Main process: add the validation metrics to `row`; True when this epoch becomes `best/` (always
    with keep=last; with keep=best when the mean validation recall rose)."""
    row.update(state.validate(state.raw))
    improved = state.cfg.keep == "last" or not state.best or not state.val_pairs \
        or row.get("val_recall_mean", 0.0) > state.best.get("val_recall_mean", 0.0)
    state.bad = 0 if improved else state.bad + 1
    if improved:
        state.best = {k: v for k, v in row.items() if k.startswith("val_") or k in ("epoch", "loss")}
    return improved


def save(state: TrainState, epoch: int, improved: bool) -> None:
    """Main process: `last/` (model, card, optimizer state), copied to `best/` when it improved."""
    card = model_card(state.cfg, state.train_pairs, state.val_pairs, state.best, epoch)
    card["training"].update(state.card_training)
    save_last(state.raw, card, state.run_dir, state.optimizer, state.scheduler, epoch, state.step, state.best,
              state.bad)
    if not improved:
        return
    wise = getattr(state.cfg, "wise", 1.0)
    if wise >= 1 or not state.start_weights:
        copy_dir_atomic(state.run_dir / "last", state.run_dir / "best", ignore=shutil.ignore_patterns(STATE_NAME))
        return
    from training.anchor import blended
    card["training"]["weight-space ensemble (WiSE-FT)"] = f"start + {wise:g} × (trained − start)"
    with blended(state.raw, state.start_weights, wise):
        state.raw.save(state.run_dir / "best", card)


def fit(state: TrainState) -> TrainResult:
    """Epochs from `start_epoch` to cfg.epochs (or an early stop / cancel); registers `best/` when finished."""
    cfg, acc = state.cfg, state.accelerator
    for epoch in range(state.start_epoch, cfg.epochs):
        row = train_one_epoch(state, epoch)
        if row is None:
            break
        acc.wait_for_everyone()
        if state.main:
            save(state, epoch + 1, validate(state, row))
            state.log.write(row)
            say(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}"
                + (f", val R@1 t2a {row['val_t2a_r1']:.3f}" if "val_t2a_r1" in row else "")
                + (f", zero-shot {row['val_zero_shot']:.3f}" if "val_zero_shot" in row else "")
                + f" ({state.epoch_times[-1]:.1f} s{state.describe(row)})")
        state.completed = epoch + 1
        state.bad = broadcast(state.bad, acc)
        if cfg.patience and state.bad >= cfg.patience:
            if state.main:
                say(f"early stop: no validation gain for {state.bad} epochs")
            break
    acc.wait_for_everyone()
    result = TrainResult(state.run_id, state.run_dir, state.status, state.completed, state.best)
    if state.main and (state.run_dir / "best" / "config.json").exists() and state.status == "finished":
        result.model_id, result.model_path = register_checkpoint(state.ws, state.run_dir / "best", state.run_id,
                                                                 state.best)
        say(f"registered {result.model_id}")
    return result


# -- checkpoints -----------------------------------------------------------------------------------------
def register_checkpoint(ws, folder: Path, run_id: int | None, metrics: dict) -> tuple[str, Path]:
    """Copy a checkpoint into models/<id> and record it in the catalogue."""
    model_id = json.loads((folder / "config.json").read_text())["model_id"]
    target = ws.models_dir / model_id
    if not target.exists():
        copy_dir_atomic(folder, target, ignore=shutil.ignore_patterns(STATE_NAME))
    ws.catalog.register_model(model_id, str(target), run_id=run_id, metrics=metrics)
    return model_id, target


def model_card(cfg, train_pairs, val_pairs, best: dict, epochs: int) -> dict:
    statuses: dict[str, int] = {}
    for p in train_pairs:
        statuses[p.status] = statuses.get(p.status, 0) + 1
    return {
        "data": {"training pairs": len(train_pairs), "validation pairs": len(val_pairs),
                 "review status of training pairs": statuses,
                 "sources": sorted({p.source for p in train_pairs}),
                 "unreviewed caption weight": cfg.unreviewed_weight},
        "training": {"base model": cfg.base_model, "loss": cfg.loss + (f" (beta {cfg.beta})" if cfg.loss == "soft" else ""),
                     "epochs": epochs, "batch size": cfg.batch_size, "learning rates": f"{cfg.lr} / {cfg.prior_lr}"},
        "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in best.items()},
    }


def save_last(model, card: dict, run_dir: Path, optimizer, scheduler, epoch: int, step: int,
              best: dict, bad: int) -> None:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
             "step": step, "best": json.dumps(best), "bad_epochs": bad}
    model.save(run_dir / "last", card, extra={STATE_NAME: lambda path: torch.save(state, path)})


def load_state(run_dir: Path) -> dict | None:
    last, old = run_dir / "last", run_dir / "last.old"
    if not last.exists() and old.exists():      # killed between the two renames of a checkpoint swap
        old.rename(last)
    path = last / STATE_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def broadcast(value, accelerator):
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list
    return broadcast_object_list([value])[0]


def latest_resumable_run(ws) -> Path | None:
    for run in ws.catalog.runs():
        folder = Path(run.dir) if run.dir else None
        if folder and run.status != "finished" and any((folder / d / STATE_NAME).exists() for d in ("last", "last.old")):
            return Path(run.dir)
    return None
