"""The training loop: one function, `run_training(config)`, that the CLI, the UI's subprocess and tests call.

    python -m training train --workspace W --epochs 10 --loss soft          # 1 CPU or 1 GPU
    accelerate launch -m training train --workspace W ...                   # N GPUs / machines

Accelerate supplies the device, mixed precision (bf16 where the GPU has it, else fp16; none on
CPU), gradient accumulation and multi-process data sharding; the loss gathers negatives across
processes. Every epoch writes `metrics.jsonl`, validates (R@1/5/10 both ways on held-out
recordings, zero-shot accuracy when they carry labels), checkpoints `last/` (student +
optimizer state, for `--resume`) and `best/`: the final epoch (keep=last, the default) or the epoch
with the best label-free validation recall (keep=best, with early stopping); never the labels.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.pipeline.metrics import retrieval_report, zero_shot_accuracy
from core.store.settings import ASSETS, resolve_device
from core.models.student import Student, StudentConfig, collate_features
from core.models import zero_shot
from core.models.zero_shot import prompt as label_prompt   # a label as a caption says it
from core.store.workspace import Workspace
from training import data as D
from training.anchor import Anchor
from training.losses import make_loss

SHIPPED = ASSETS / "student"
STATE_NAME = "trainer_state.pt"


@dataclass
class TrainConfig:
    """Every knob, with the defaults the Train tab shows. Overridable by --config FILE and flags."""
    base_model: str = "shipped"          # shipped | fresh | a workspace model id | a checkpoint folder
    epochs: int = 20
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 3e-4                     # residual MLP, log-mel branch
    prior_lr: float = 3e-4               # class-name prior, class weights, text projection, temperature
    text_lr: float = 2e-5                # fine-tuned MiniLM layers
    weight_decay: float = 0.01
    warmup_steps: int = 10
    loss: str = "infonce"                # infonce | soft (see README: infonce + distill measured best)
    beta: float = 0.3                    # soft-label share given to caption similarity (loss "soft")
    distill: float = 1.0                 # weight of a cosine pull of each clip onto its own caption
    # No forgetting (issue 15; benchmarks/review_gain.py, 3 seeds): with every clip reviewed, the anchor and
    # teacher replay kept out-of-domain zero-shot at the 0-review level (39 vs 30 % without) for ~4 points
    # in-domain; with nothing reviewed both are inactive, so leave-one-set-out is unchanged.
    anchor: float = 2.0                  # pull each clip's audio embedding toward the starting model's (training/anchor.py)
    anchor_follows_review: bool = True   # scale `anchor` by the share of reviewed pairs (0 reviewed: no pull)
    weight_anchor: float = 0.0           # L2 pull of the trainable weights toward their starting values
    teacher_replay: float = 0.5          # reviewed clips also keep their teacher caption, at this weight (0: off)
    train_text_proj: bool = True         # False keeps the text side exactly MiniLM (prompts stay where they were)
    unreviewed_weight: float = 0.5       # teacher captions nobody reviewed (0 = leave out)
    import_weight: float = 1.0
    min_confidence: float = 0.0          # leave out teacher captions below this confidence
    sources: list[str] = field(default_factory=list)   # restrict to these sources (empty: all)
    val_fraction: float = 0.1
    keep: str = "last"                   # last: the final epoch (the cosine schedule ends at 0); best: the
                                         # epoch with the best validation recall (it favours early epochs:
                                         # measured, the log-mel branch was still learning after them)
    patience: int = 3                    # with keep=best: epochs without validation gain before stopping (0: never)
    crop_min: float = 0.6
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | mps
    mixed_precision: str = "auto"        # auto | no | bf16 | fp16
    text_trainable_layers: int = -1      # -1: as the base model has it
    student: dict = field(default_factory=dict)        # StudentConfig values for base_model="fresh"
    name: str = "hearsay-student"
    log_every: int = 10                  # steps between train-metric rows
    backbone: str = "embedded"           # the student: embedded | clap:<hub id or folder> | combine:<audio>+<text>
                                         # (the last two: training/train_clap.py)
    backbone_options: dict = field(default_factory=dict)   # that backbone's own settings (train_clap.ClapOptions)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        if values.get("keep", "last") not in ("last", "best"):
            raise ValueError(f"keep must be 'last' or 'best', not {values['keep']!r}")
        if values.get("backbone", "embedded") != "embedded":
            from training.train_clap import parse_backbone
            parse_backbone(values["backbone"])       # a clear error for an unknown kind, before any run starts
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix == ".toml":
        import tomllib
        with path.open("rb") as fh:
            return tomllib.load(fh)
    return json.loads(path.read_text())


@dataclass
class TrainResult:
    run_id: int | None
    run_dir: Path
    status: str                          # finished | cancelled | failed
    epochs_done: int
    best: dict
    model_id: str | None = None
    model_path: Path | None = None


# -- model -----------------------------------------------------------------------------------------------
def initial_student(cfg: TrainConfig, ws: Workspace | None = None) -> Student:
    base = cfg.base_model
    if base == "fresh" or (base == "shipped" and not (SHIPPED / "config.json").exists()):
        model = Student(StudentConfig(**{"name": cfg.name, **cfg.student}))
    else:
        from core.models.registry import resolve_path
        model = Student.load(resolve_path(base, ws))
        model.config.name = cfg.name
    if cfg.text_trainable_layers >= 0 and cfg.text_trainable_layers != model.config.text_trainable_layers:
        model.set_text_trainable(cfg.text_trainable_layers)
    return model


def param_groups(model: Student, cfg: TrainConfig) -> list[dict]:
    slow, fast, text = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("text_encoder."):
            text.append(p)
        elif name.startswith("text_proj") and not cfg.train_text_proj:
            p.requires_grad_(False)
        elif name.startswith(("prior", "class_weight", "text_proj", "logit_scale")):
            slow.append(p)                 # initialised to something meaningful: move gently, no decay
        else:
            fast.append(p)
    groups = [{"params": slow, "lr": cfg.prior_lr, "weight_decay": 0.0},
              {"params": fast, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if text:
        groups.append({"params": text, "lr": cfg.text_lr, "weight_decay": cfg.weight_decay})
    return [g for g in groups if g["params"]]


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def pick_precision(cfg: TrainConfig, device: str) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


# -- validation ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: Student, val: D.PairDataset, loss_fn, batch_size: int = 256) -> dict:
    """Validation loss, R@1/5/10 both ways (a caption matches every clip with the same caption),
    and zero-shot accuracy when the clips carry labels."""
    if len(val) == 0:
        return {}
    model.eval()
    audio, text, losses = [], [], []
    dev = model.device
    for i in range(0, len(val), batch_size):
        items = [val[j] for j in range(i, min(len(val), i + batch_size))]
        batch = D.collate(items)
        a = model.forward_audio(batch["logits"].to(dev), batch["mask"].to(dev), batch["mel"].to(dev),
                                batch["mel_lengths"].to(dev), batch["emb"].to(dev) if "emb" in batch else None)
        base = model.base_text(batch["captions"]) if model.text_encoder is not None else batch["text_base"].to(dev)
        t = model.forward_text(base)
        losses.append(float(loss_fn(a, t, model.logit_scale, batch["text_base"].to(dev))) * len(items))
        audio.append(a.float().cpu().numpy())
        text.append(t.float().cpu().numpy())
    audio, text = np.concatenate(audio), np.concatenate(text)
    captions = [p.caption for p in val.pairs]
    relevant = np.array([[a == b for b in captions] for a in captions])
    out = {"val_loss": sum(losses) / len(val)}
    out.update({f"val_{k}": v for k, v in retrieval_report(audio, text, relevant).items()})
    out["val_recall_mean"] = float(np.mean([out[f"val_{d}_r{k}"] for d in ("t2a", "a2t") for k in (1, 5, 10)]))
    labels = [p.label for p in val.pairs]
    if all(labels) and len(set(labels)) >= 2:
        classes = sorted(set(labels))
        class_emb = zero_shot.classifier(model, classes)
        out["val_zero_shot"] = zero_shot_accuracy(audio, class_emb, [classes.index(lb) for lb in labels])
    model.train()
    return out


# -- the run ---------------------------------------------------------------------------------------------
class MetricsLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, row: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def say(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def new_run_dir(ws: Workspace, cfg: TrainConfig, run_id: int | None) -> tuple[int, Path]:
    if run_id is None:
        run_id = ws.catalog.add_run(cfg.to_dict()).id
    run_dir = ws.runs_dir / f"run-{run_id:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ws.catalog.update_run(run_id, dir=str(run_dir), config=cfg.to_dict())
    return run_id, run_dir


def run_training(ws: Workspace, cfg: TrainConfig, *, run_id: int | None = None, run_dir: Path | None = None,
                 resume: bool = False, should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Train a student on the workspace's pairs; records the run and registers the best checkpoint."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    device = resolve_device(cfg.device)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=pick_precision(cfg, device),
                              gradient_accumulation_steps=cfg.grad_accum,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    main = accelerator.is_main_process
    if run_dir is None:
        if main:
            run_id, run_dir = new_run_dir(ws, cfg, run_id)
        run_dir = Path(_broadcast(str(run_dir) if main else "", accelerator))
        run_id = int(run_dir.name.split("-")[-1])
    elif run_id is not None and main:
        ws.catalog.update_run(run_id, dir=str(run_dir))
    run_dir = Path(run_dir)
    if main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        if run_id is not None:
            ws.catalog.update_run(run_id, status="running", pid=os.getpid(), error=None)
    log = MetricsLog(run_dir / "metrics.jsonl")
    set_seed(cfg.seed)
    started = time.time()
    try:
        trainer = _train
        if cfg.backbone != "embedded":               # another student backbone has its own loop
            from training.train_clap import train_clap as trainer
        result = trainer(ws, cfg, accelerator, run_id, run_dir, log, resume, should_stop, started)
    except BaseException as exc:
        if main and run_id is not None:
            cancelled = isinstance(exc, (KeyboardInterrupt, InterruptedError))
            ws.catalog.update_run(run_id, status="cancelled" if cancelled else "failed",
                                  error=None if cancelled else f"{type(exc).__name__}: {exc}")
        raise
    if main and run_id is not None:
        ws.catalog.update_run(run_id, status=result.status, model_id=result.model_id)
    return result


def _train(ws, cfg, accelerator, run_id, run_dir, log, resume, should_stop, started) -> TrainResult:
    main = accelerator.is_main_process
    state = _load_state(run_dir) if resume else None
    if main:
        say(f"run {run_id}: device {accelerator.device}, precision {accelerator.mixed_precision}, "
            f"{accelerator.num_processes} process(es)")
    model = Student.load(run_dir / "last") if state else initial_student(cfg, ws)
    if state and cfg.text_trainable_layers >= 0 and cfg.text_trainable_layers != model.config.text_trainable_layers:
        model.set_text_trainable(cfg.text_trainable_layers)
    model.train()

    pairs = D.collect_pairs(ws, unreviewed_weight=cfg.unreviewed_weight, import_weight=cfg.import_weight,
                            sources=cfg.sources or None, min_confidence=cfg.min_confidence,
                            teacher_replay=cfg.teacher_replay)
    strength = cfg.anchor * (D.reviewed_share(pairs) if cfg.anchor_follows_review else 1.0)
    start = initial_student(cfg, ws) if state and (strength or cfg.weight_anchor) else model
    anchor = Anchor(start, strength, cfg.weight_anchor)       # the model training started from, not a resumed one
    train_pairs, val_pairs = D.split_by_recording(pairs, cfg.val_fraction, cfg.seed)
    if len(train_pairs) < 2:
        raise ValueError(f"only {len(train_pairs)} training pair(s): caption and review some clips first")
    if main:
        say(f"{len(train_pairs)} training pairs, {len(val_pairs)} validation pairs "
            f"({len({p.recording_id for p in val_pairs})} held-out recordings)"
            + (f"; anchor {anchor.anchor:.2f}" if anchor.anchor else ""))
    progress = (lambda d, t, m: say(f"{m}: {d}/{t}")) if main else None
    with accelerator.main_process_first():     # one process fills the feature cache, the rest read it
        feats = D.cached_features(ws, train_pairs + val_pairs, model.config.patch_hop,
                                  quiet_gain=model.config.quiet_gain,
                                  embeddings=model.config.tagger_embeddings, progress=progress,
                                  should_stop=should_stop)
    text_base = D.text_embeddings([p.caption for p in train_pairs + val_pairs])
    n = len(train_pairs)
    augment = D.Augment(crop_min=cfg.crop_min)
    train_ds = D.PairDataset(train_pairs, feats[:n], text_base[:n], augment, seed=cfg.seed)
    val_ds = D.PairDataset(val_pairs, feats[n:], text_base[n:])

    batch_size = min(cfg.batch_size, len(train_ds))
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=D.collate,
                                         drop_last=len(train_ds) > batch_size)
    optimizer = torch.optim.AdamW(param_groups(model, cfg))
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps,
                                                                       steps_per_epoch * cfg.epochs))
    loss_fn = make_loss(cfg.loss, cfg.beta, cfg.distill)
    start_epoch, step, best, bad = 0, 0, {}, 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step, best, bad = state["epoch"], state["step"], json.loads(state["best"]), state["bad_epochs"]
        if main:
            say(f"resuming after epoch {start_epoch}")
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw = accelerator.unwrap_model(model)
    anchor.to(accelerator.device)

    status, epoch_times = "finished", []
    completed = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        train_ds.rng.seed(cfg.seed * 1000 + epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        running, seen = 0.0, 0
        for batch in loader:
            if should_stop():
                status = "cancelled"
                break
            with accelerator.accumulate(model):
                audio, text, logit_scale = model(batch["logits"], batch["mask"], batch["mel"], batch["mel_lengths"],
                                                 text_base=batch["text_base"], captions=batch["captions"],
                                                 emb=batch.get("emb"))
                loss = loss_fn(audio, text, logit_scale, batch["text_base"], batch["weight"])
                if anchor.active:
                    loss = loss + anchor.loss(raw, batch, audio)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            with torch.no_grad():
                raw.logit_scale.clamp_(0, math.log(100))
            running += float(loss.detach()) * len(batch["weight"])
            seen += len(batch["weight"])
            if accelerator.sync_gradients:
                step += 1
                if main and step % cfg.log_every == 0:
                    log.write({"kind": "train", "epoch": epoch + 1, "step": step, "loss": float(loss.detach()),
                               "lr": scheduler.get_last_lr()[-1], "temperature": float(1 / raw.logit_scale.detach().exp()),
                               "elapsed": time.time() - started})
        if status == "cancelled":
            break
        epoch_times.append(time.time() - t0)
        row = {"kind": "epoch", "epoch": epoch + 1, "step": step, "loss": running / max(1, seen),
               "lr": scheduler.get_last_lr()[-1], "temperature": float(1 / raw.logit_scale.detach().exp()),
               "epoch_seconds": epoch_times[-1], "elapsed": time.time() - started,
               "eta": float(np.mean(epoch_times)) * (cfg.epochs - epoch - 1)}
        accelerator.wait_for_everyone()
        if main:
            row.update(evaluate(raw, val_ds, loss_fn))
            improved = cfg.keep == "last" or not best or not val_ds.pairs \
                or row.get("val_recall_mean", 0.0) > best.get("val_recall_mean", 0.0)
            bad = 0 if improved else bad + 1
            if improved:
                best = {k: v for k, v in row.items() if k.startswith("val_") or k in ("epoch", "loss")}
            card = _card(cfg, train_pairs, val_pairs, best, epoch + 1)
            _save_last(raw, card, run_dir, optimizer, scheduler, epoch + 1, step, best, bad)
            if improved:
                shutil.copytree(run_dir / "last", run_dir / "best.tmp", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(STATE_NAME))
                _swap(run_dir / "best.tmp", run_dir / "best")
            log.write(row)
        completed = epoch + 1
        if main:
            say(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}"
                + (f", val R@1 t2a {row['val_t2a_r1']:.3f}" if "val_t2a_r1" in row else "")
                + (f", zero-shot {row['val_zero_shot']:.3f}" if "val_zero_shot" in row else "")
                + f" ({epoch_times[-1]:.1f} s)")
        bad = _broadcast(bad, accelerator)
        if cfg.patience and bad >= cfg.patience:
            if main:
                say(f"early stop: no validation gain for {bad} epochs")
            break
    accelerator.wait_for_everyone()
    result = TrainResult(run_id, run_dir, status, completed, best)
    if main and (run_dir / "best" / "config.json").exists() and status == "finished":
        result.model_id, result.model_path = register_checkpoint(ws, run_dir / "best", run_id, best)
        say(f"registered {result.model_id}")
    return result


def register_checkpoint(ws: Workspace, folder: Path, run_id: int | None, metrics: dict) -> tuple[str, Path]:
    """Copy a checkpoint into models/<id> and record it in the catalogue."""
    model_id = json.loads((folder / "config.json").read_text())["model_id"]
    target = ws.models_dir / model_id
    if not target.exists():
        shutil.copytree(folder, target.with_name(target.name + ".tmp"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(STATE_NAME))
        _swap(target.with_name(target.name + ".tmp"), target)
    ws.catalog.register_model(model_id, str(target), run_id=run_id, metrics=metrics)
    return model_id, target


def _card(cfg: TrainConfig, train_pairs, val_pairs, best: dict, epochs: int) -> dict:
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


def _save_last(model: Student, card: dict, run_dir: Path, optimizer, scheduler, epoch: int, step: int,
               best: dict, bad: int) -> None:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
             "step": step, "best": json.dumps(best), "bad_epochs": bad}
    model.save(run_dir / "last", card, extra={STATE_NAME: lambda path: torch.save(state, path)})


def _load_state(run_dir: Path) -> dict | None:
    last, old = run_dir / "last", run_dir / "last.old"
    if not last.exists() and old.exists():      # killed between the two renames of a checkpoint swap
        old.rename(last)
    path = last / STATE_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _swap(src: Path, dst: Path) -> None:
    from core.store.files import replace_dir
    replace_dir(src, dst)


def _broadcast(value, accelerator):
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list
    return broadcast_object_list([value])[0]


def latest_resumable_run(ws: Workspace) -> Path | None:
    for run in ws.catalog.runs():
        folder = Path(run.dir) if run.dir else None
        if folder and run.status != "finished" and any((folder / d / STATE_NAME).exists() for d in ("last", "last.old")):
            return Path(run.dir)
    return None


if __name__ == "__main__":      # `python -m training.train ...` is the same as `python -m training train ...`
    from training.cli_train import main
    sys.exit(main())
