"""A training run: `run_training(config)`, that the CLI, the UI's subprocess and tests call, and the
embedded student's part of it (its config, model, data and validation); the epoch loop is training/loop.py.

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

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.pipeline.metrics import retrieval_report, zero_shot_accuracy
from core.store.settings import SHIPPED_MODEL, resolve_device
from core.models.student import Student, StudentConfig
from core.models import zero_shot
from core.models.zero_shot import prompt as label_prompt   # a label as a caption says it
from core.store.workspace import Workspace, parse_run_id
from training import data as D
from training.anchor import Anchor, trainable_weights
from training.config import TrainConfig   # the run's settings; callers import it from here too
from training.loop import (MetricsLog, TrainResult, TrainState, broadcast, fit, load_state, prepare, say,
                           split_pairs)
from training.losses import make_loss

SHIPPED = SHIPPED_MODEL


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
                                batch["mel_lengths"].to(dev), batch["emb"].to(dev) if "emb" in batch else None,
                                batch["words"].to(dev) if "words" in batch else None)
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
def new_run_dir(ws: Workspace, cfg: TrainConfig, run_id: int | None) -> tuple[int, Path]:
    if run_id is None:
        run_id = ws.catalog.add_run(cfg.to_dict()).id
    run_dir = ws.run_dir(run_id)
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
        run_dir = Path(broadcast(str(run_dir) if main else "", accelerator))
        run_id = parse_run_id(run_dir)
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
    """The embedded student: `prepare_embedded`, then the shared loop (training/loop.py)."""
    return fit(prepare_embedded(ws, cfg, accelerator, run_id, run_dir, log, resume, should_stop, started))


def prepare_embedded(ws, cfg, accelerator, run_id, run_dir, log, resume, should_stop, started) -> TrainState:
    """The student (a resumed run's `last/`, else the base model), its anchor, the cached tagger features of
    every pair, the loader and the loss; then loop.prepare (optimizer, schedule, resumed counters)."""
    from accelerate.utils import set_seed
    main = accelerator.is_main_process
    saved = load_state(run_dir) if resume else None
    if main:
        say(f"run {run_id}: device {accelerator.device}, precision {accelerator.mixed_precision}, "
            f"{accelerator.num_processes} process(es)")
    model = Student.load(run_dir / "last") if saved else initial_student(cfg, ws)
    if saved and cfg.text_trainable_layers >= 0 and cfg.text_trainable_layers != model.config.text_trainable_layers:
        model.set_text_trainable(cfg.text_trainable_layers)
    model.train()

    pairs = D.collect_pairs(ws, unreviewed_weight=cfg.unreviewed_weight, import_weight=cfg.import_weight,
                            sources=cfg.sources or None, min_confidence=cfg.min_confidence,
                            teacher_replay=cfg.teacher_replay)
    strength = cfg.anchor * (D.reviewed_share(pairs) if cfg.anchor_follows_review else 1.0)
    start = model
    if saved and (strength or cfg.weight_anchor or cfg.wise < 1):
        set_seed(cfg.seed)                    # the same random init the run began with
        start = initial_student(cfg, ws)
    anchor = Anchor(start, strength, cfg.weight_anchor)       # the model training started from, not a resumed one
    start_weights = trainable_weights(start) if cfg.wise < 1 else None
    train_pairs, val_pairs = split_pairs(cfg, pairs, main, f"; anchor {anchor.anchor:.2f}" if anchor.anchor else "")
    progress = (lambda d, t, m: say(f"{m}: {d}/{t}")) if main else None
    with accelerator.main_process_first():     # one process fills the feature cache, the rest read it
        feats = D.cached_features(ws, train_pairs + val_pairs, model.config.patch_hop,
                                  quiet_gain=model.config.quiet_gain,
                                  embeddings=model.config.tagger_embeddings, words=model.config.words,
                                  progress=progress,
                                  should_stop=should_stop)
    text_base = D.text_embeddings([p.caption for p in train_pairs + val_pairs])
    n = len(train_pairs)
    train_ds = D.PairDataset(train_pairs, feats[:n], text_base[:n], D.Augment(crop_min=cfg.crop_min), seed=cfg.seed)
    val_ds = D.PairDataset(val_pairs, feats[n:], text_base[n:])

    batch_size = min(cfg.batch_size, len(train_ds))
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=D.collate,
                                         drop_last=len(train_ds) > batch_size)
    loss_fn = make_loss(cfg.loss, cfg.beta, cfg.distill)

    def compute_loss(state: TrainState, batch: dict) -> torch.Tensor:
        audio, text, logit_scale = state.model(batch["logits"], batch["mask"], batch["mel"], batch["mel_lengths"],
                                               text_base=batch["text_base"], captions=batch["captions"],
                                               emb=batch.get("emb"), words=batch.get("words"))
        loss = loss_fn(audio, text, logit_scale, batch["text_base"], batch["weight"])
        if anchor.active:
            loss = loss + anchor.loss(state.raw, batch, audio)
        return loss

    state = TrainState(ws, cfg, accelerator, run_id, run_dir, log, should_stop, started, train_pairs, val_pairs,
                       compute_loss=compute_loss, validate=lambda raw: evaluate(raw, val_ds, loss_fn),
                       begin_epoch=lambda epoch: train_ds.rng.seed(cfg.seed * 1000 + epoch),
                       start_weights=start_weights)
    prepare(state, model, loader, param_groups(model, cfg), saved)
    anchor.to(accelerator.device)
    return state
