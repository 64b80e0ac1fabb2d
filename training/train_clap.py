"""Fine-tune a pretrained student: training/train.py's run for the `clap` and `combine` backbones.

    python -m training train --workspace W --student clap:laion/clap-htsat-unfused --epochs 5 --batch-size 64
    python -m training train --workspace W --student combine:facebook/wav2vec2-base+minilm

- `clap:<hub id, folder or model id>`: core.models.clap_student.ClapStudent (a transformers ClapModel);
- `combine:<audio encoder>+<sentence-transformers model>`: core.models.combine_student.CombineStudent.

`run_training` hands over here when `TrainConfig.backbone` is not `embedded`: same run folder, catalogue
row, metrics.jsonl, last/ + best/ checkpoints, resume, registration and losses (InfoNCE / soft, with
negatives gathered across processes). What differs: the model sees raw audio (16 kHz clips cached on disk
as float16, cropped at random to the model's window each epoch) instead of cached tagger features, and
these options (`TrainConfig.backbone_options`, or the CLI flags named in cli_train):
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.models import clap_student, combine_student, zero_shot
from core.models.clap_student import DEFAULT_REPO, ClapStudent
from core.pipeline.metrics import retrieval_report, zero_shot_accuracy
from training import data as D
from training.losses import make_loss

KINDS = ("embedded", "clap", "combine")


def parse_backbone(spec: str | None) -> tuple[str, str]:
    """`embedded` | `clap[:<repo-or-folder-or-model-id>]` | `combine:<audio>[+<text>]` → (kind, id)."""
    kind, _, ident = (spec or "embedded").strip().partition(":")
    if kind == "embedded" and not ident:
        return kind, ""
    if kind == "clap":
        return kind, ident.strip() or DEFAULT_REPO
    if kind == "combine" and ident.strip():
        combine_student.parse(ident)
        return kind, ident.strip()
    raise ValueError(f"unknown student {spec!r}: use 'embedded', 'clap:<hub id or folder>' (e.g. clap:{DEFAULT_REPO}) "
                     f"or 'combine:<audio encoder>+<sentence-transformers model>' "
                     f"(e.g. combine:{combine_student.EXAMPLE}+{combine_student.MINILM})")


def load_student(kind: str, source: str, ws=None, checkpoint: Path | None = None):
    """The starting model: a run's checkpoint when resuming, else the pretrained source."""
    if kind == "clap":
        return ClapStudent.load(checkpoint) if checkpoint else ClapStudent.from_pretrained(source, ws)
    cls = combine_student.CombineStudent
    return cls.load(checkpoint) if checkpoint else cls.from_sources(*combine_student.parse(source), ws=ws)


@dataclass
class ClapOptions:
    lr: float = 1e-5                       # both encoder towers (with LoRA: the adapters, try 1e-4)
    head_lr: float = 1e-4                  # projections and temperature
    freeze_audio_layers: int = 0           # bottom N HTSAT stages (+ patch embedding) stay fixed; -1: whole tower
    freeze_text_layers: int = 0            # bottom N RoBERTa layers (+ embeddings) stay fixed; -1: whole tower
    lora_rank: int = 0                     # > 0: LoRA adapters on the attention layers (needs peft) instead
    lora_alpha: float = 16.0               # of fine-tuning the towers' weights themselves
    gradient_checkpointing: bool = True    # CUDA only: recompute activations to fit bigger batches
    num_workers: int = -1                  # DataLoader workers (-1: 4 on CUDA, 0 on CPU)

    @classmethod
    def from_dict(cls, values: dict | None) -> "ClapOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values or {}) - known
        if unknown:
            raise ValueError(f"unknown CLAP option(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**(values or {}))


# -- the model's trainable parts -----------------------------------------------------------------------
def freeze_layers(student, audio_layers: int, text_layers: int) -> None:
    """Freeze the bottom of each tower: embeddings first, then `n` stages / layers (-1: everything)."""
    if isinstance(student, combine_student.CombineStudent):
        _freeze_bottom(student, student.encoder, audio_layers)
        _freeze_bottom(student, student.text_model, text_layers)
        return
    audio, text = student.model.audio_model.audio_encoder, student.model.text_model
    if audio_layers:
        stages = list(audio.layers)
        parts = [audio.patch_embed, audio.batch_norm] + stages[:len(stages) if audio_layers < 0 else audio_layers]
        if audio_layers < 0:
            parts += [audio.norm]
        _freeze(student, parts)
    if text_layers:
        layers = list(text.encoder.layer)
        parts = [text.embeddings] + layers[:len(layers) if text_layers < 0 else text_layers]
        if text_layers < 0 and getattr(text, "pooler", None) is not None:
            parts += [text.pooler]
        _freeze(student, parts)


def _freeze_bottom(student, tower, n: int) -> None:
    """Any transformer tower: its longest layer list is "the layers"; everything but layers[n:] and the
    norms after them freezes (n = -1: the whole tower)."""
    if not n:
        return
    if n < 0:
        _freeze(student, [tower])
        return
    lists = [m for m in tower.modules() if isinstance(m, torch.nn.ModuleList)]
    layers = max(lists, key=len) if lists else []
    keep = {id(p) for layer in list(layers)[n:] for p in layer.parameters()}
    keep |= {id(p) for name, m in tower.named_modules() if name.split(".")[-1] in ("layer_norm", "layernorm", "norm")
             and not any(layer is m or m in layer.modules() for layer in layers) for p in m.parameters()}
    frozen = [m for m in tower.modules() if not list(m.children()) and not any(id(p) in keep for p in m.parameters())]
    _freeze(student, frozen)


def _freeze(student, modules) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
    student.frozen.extend(modules)
    student.train(student.training)


def add_lora(student: ClapStudent, rank: int, alpha: float) -> None:
    """Wrap the ClapModel with peft LoRA adapters on every attention projection; projections stay trainable."""
    if not isinstance(student, ClapStudent):
        raise ValueError("LoRA (--lora-rank) is offered for clap students only")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise RuntimeError("LoRA needs the peft package: `pip install peft`, or train without --lora-rank") from None
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05,
                        target_modules=["query", "key", "value"],
                        modules_to_save=["audio_projection", "text_projection"])
    student.model = get_peft_model(student.model, config)


def enable_checkpointing(student) -> int:
    """Gradient checkpointing on every HTSAT stage and RoBERTa layer. ClapModel does not declare support
    (`gradient_checkpointing_enable` refuses), but its layers are transformers' checkpointing layers."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer
    n = 0
    for m in student.modules():
        if isinstance(m, GradientCheckpointingLayer):
            m.gradient_checkpointing = True
            m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            n += 1
    return n


def freeze_unused(student, batch: dict, cfg) -> list[str]:
    """Freeze what one training step leaves without a gradient (CLAP's second temperature, a BERT pooler
    that mean pooling skips, wav2vec2's mask embedding when masking is off): useless to the loss, and
    DDP refuses such parameters on several processes. Returns their names."""
    loss_fn = make_loss(cfg.loss, cfg.beta, cfg.distill)
    was_training = student.training
    student.train()
    audio, text, scale = student(**batch["inputs"])
    loss_fn(audio, text, scale, batch.get("text_base"), batch["weight"]).backward()
    unused = [n for n, p in student.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in student.named_parameters():
        if name in unused:
            p.requires_grad_(False)
        p.grad = None
    student.train(was_training)
    return unused


def param_groups(student, opts: ClapOptions, weight_decay: float) -> list[dict]:
    towers, head, scale = [], [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if "logit_scale" in name:
            scale.append(p)
        elif "_proj" in name:             # CLAP's audio/text_projection, the combined student's audio/text_proj
            head.append(p)
        else:
            towers.append(p)
    groups = [{"params": towers, "lr": opts.lr, "weight_decay": weight_decay},
              {"params": head, "lr": opts.head_lr, "weight_decay": weight_decay},
              {"params": scale, "lr": opts.head_lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# -- data --------------------------------------------------------------------------------------------
class WaveCache:
    """16 kHz clips as float16 .npy (cache/waves-16k/ab/<hash>.npy): decoded once, read by workers."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        h = hashlib.sha1(key.encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npy"

    def fill(self, ws, pairs, progress=None, should_stop=None) -> list[Path]:
        paths = [self.path(p.key) for p in pairs]
        todo = [i for i, path in enumerate(paths) if not path.exists()]
        for n, i in enumerate(todo):
            if should_stop and should_stop():
                raise InterruptedError("stopped while reading clips")
            if progress and n % 64 == 0:
                progress(n, len(todo), "reading clips")
            paths[i].parent.mkdir(parents=True, exist_ok=True)
            tmp = paths[i].with_suffix(".tmp.npy")
            np.save(tmp, np.asarray(ws.load_clip(pairs[i].clip_id), np.float16))
            tmp.replace(paths[i])
        return paths


class WaveDataset(torch.utils.data.Dataset):
    """(wave, caption, weight, frozen caption embedding) per pair; a random gain when training."""

    def __init__(self, pairs, paths, text_base: np.ndarray | None, seed: int = 0, augment: bool = False):
        self.pairs, self.paths, self.text_base = list(pairs), list(paths), text_base
        self.seed, self.augment, self.epoch = seed, augment, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        wave = np.load(self.paths[i]).astype(np.float32)
        rng = np.random.default_rng([self.seed, self.epoch, i])      # the same in any worker
        if self.augment:
            wave = wave * np.float32(10 ** (rng.uniform(-6, 6) / 20))
        item = {"wave": wave, "caption": self.pairs[i].caption, "weight": self.pairs[i].weight,
                "seed": int(rng.integers(1 << 31))}
        if self.text_base is not None:
            item["text_base"] = self.text_base[i]
        return item


class Collate:
    """Waves → the audio tower's inputs (a random window of long clips), captions → token ids, as
    `batch["inputs"]` for the model's forward. Holds only processor parts (picklable), so DataLoader
    workers do this work."""

    def __init__(self, student):
        self.combined = isinstance(student, combine_student.CombineStudent)
        self.features = student.features
        if self.combined:
            self.tokenizer, self.max_tokens = student.text_model[0].tokenizer, student.text_model.max_seq_length
            self.max_seconds, self.whisper = float(student.meta["max_seconds"]), student.whisper
        else:
            self.tokenizer, self.max_tokens, self.fused = student.tokenizer, student.max_tokens, student.fused

    def __call__(self, items) -> dict:
        rng = np.random.default_rng(items[0]["seed"])
        waves, captions = [it["wave"] for it in items], [it["caption"] for it in items]
        if self.combined:
            tokens = self.tokenizer(captions, padding=True, truncation="longest_first", max_length=self.max_tokens,
                                    return_tensors="pt")
            inputs = {"audio": combine_student.audio_inputs(self.features, waves, self.max_seconds, self.whisper, rng),
                      "text": {k: v for k, v in tokens.items() if torch.is_tensor(v)}}
        else:
            inputs = {**clap_student.audio_inputs(self.features, waves, self.fused, rng),
                      **clap_student.text_inputs(self.tokenizer, captions, self.max_tokens)}
        batch = {"inputs": inputs, "weight": torch.tensor([it["weight"] for it in items], dtype=torch.float32)}
        if "text_base" in items[0]:
            batch["text_base"] = torch.from_numpy(np.stack([it["text_base"] for it in items]))
        return batch


# -- validation ----------------------------------------------------------------------------------------
@torch.no_grad()
def validate(student, pairs, paths) -> dict:
    """R@1/5/10 both ways on held-out clips (a caption matches every clip with the same caption), a
    hard-target InfoNCE loss, and zero-shot accuracy when the clips carry labels."""
    if not pairs:
        return {}
    audio = student.embed_audio([np.load(p).astype(np.float32) for p in paths])
    text = student.embed_text([p.caption for p in pairs])
    captions = [p.caption for p in pairs]
    relevant = np.array([[a == b for b in captions] for a in captions])
    scale = float(student.logit_scale.detach().exp().clamp(max=100).cpu())
    logits = scale * audio.astype(np.float64) @ text.T.astype(np.float64)
    target = relevant / relevant.sum(1, keepdims=True)
    loss = 0.5 * (_soft_ce(logits, target) + _soft_ce(logits.T, target.T))
    out = {"val_loss": float(loss)}
    out.update({f"val_{k}": v for k, v in retrieval_report(audio, text, relevant).items()})
    out["val_recall_mean"] = float(np.mean([out[f"val_{d}_r{k}"] for d in ("t2a", "a2t") for k in (1, 5, 10)]))
    labels = [p.label for p in pairs]
    if all(labels) and len(set(labels)) >= 2:
        classes = sorted(set(labels))
        class_emb = zero_shot.classifier(student, classes)
        out["val_zero_shot"] = zero_shot_accuracy(audio, class_emb, [classes.index(lb) for lb in labels])
    return out


def _soft_ce(logits: np.ndarray, target: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-(target * logp).sum(1).mean())


# -- the run -------------------------------------------------------------------------------------------
def train_clap(ws, cfg, accelerator, run_id, run_dir: Path, log, resume: bool, should_stop, started):
    """training/train.py `_train`'s counterpart for the clap and combine backbones; returns a train.TrainResult."""
    from training import train as T
    main = accelerator.is_main_process
    kind, source = parse_backbone(cfg.backbone)
    opts = ClapOptions.from_dict(cfg.backbone_options)
    cuda = accelerator.device.type == "cuda"
    state = T._load_state(run_dir) if resume else None
    student = load_student(kind, source, ws, run_dir / "last" if state else None)
    student.name = cfg.name if cfg.name != "hearsay-student" else f"hearsay-{kind}"
    student.meta["base_model"] = student.meta.get("base_model") if state else source
    freeze_layers(student, opts.freeze_audio_layers, opts.freeze_text_layers)
    if opts.lora_rank > 0:
        add_lora(student, opts.lora_rank, opts.lora_alpha)
    checkpointed = enable_checkpointing(student) if cuda and opts.gradient_checkpointing else 0
    student.train()
    if main:
        trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
        total = sum(p.numel() for p in student.parameters())
        T.say(f"run {run_id}: {kind} student from {source}: {trainable:,} of {total:,} parameters train"
              + (f", LoRA rank {opts.lora_rank}" if opts.lora_rank else "")
              + (f", gradient checkpointing on {checkpointed} layers" if checkpointed else "")
              + f"; device {accelerator.device}, precision {accelerator.mixed_precision}, "
                f"{accelerator.num_processes} process(es)")

    kwargs = dict(unreviewed_weight=cfg.unreviewed_weight, import_weight=cfg.import_weight,
                  sources=cfg.sources or None, min_confidence=cfg.min_confidence)
    if getattr(cfg, "teacher_replay", 0):
        kwargs["teacher_replay"] = cfg.teacher_replay
    pairs = D.collect_pairs(ws, **kwargs)
    train_pairs, val_pairs = D.split_by_recording(pairs, cfg.val_fraction, cfg.seed)
    if len(train_pairs) < 2:
        raise ValueError(f"only {len(train_pairs)} training pair(s): caption and review some clips first")
    if main:
        T.say(f"{len(train_pairs)} training pairs, {len(val_pairs)} validation pairs "
              f"({len({p.recording_id for p in val_pairs})} held-out recordings)")
    progress = (lambda d, t, m: T.say(f"{m}: {d}/{t}")) if main else None
    cache = WaveCache(ws.cache_dir / "waves-16k")
    with accelerator.main_process_first():
        paths = cache.fill(ws, train_pairs + val_pairs, progress=progress, should_stop=should_stop)
    n = len(train_pairs)
    text_base = D.text_embeddings([p.caption for p in train_pairs]) if cfg.loss == "soft" and cfg.beta > 0 else None
    train_ds = WaveDataset(train_pairs, paths[:n], text_base, seed=cfg.seed, augment=True)
    workers = opts.num_workers if opts.num_workers >= 0 else (4 if cuda else 0)
    batch_size = min(cfg.batch_size, len(train_ds))
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=Collate(student),
                                         drop_last=len(train_ds) > batch_size, num_workers=workers,
                                         pin_memory=cuda)
    unused = freeze_unused(student, loader.collate_fn([train_ds[i] for i in range(batch_size)]), cfg)
    if main and unused:
        T.say(f"{len(unused)} parameter(s) get no gradient and stay fixed: {', '.join(unused[:4])}"
              + (" ..." if len(unused) > 4 else ""))
    optimizer = torch.optim.AdamW(param_groups(student, opts, cfg.weight_decay))
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, T.lr_lambda(cfg.warmup_steps, steps_per_epoch * cfg.epochs))
    loss_fn = make_loss(cfg.loss, cfg.beta, cfg.distill)
    start_epoch, step, best, bad = 0, 0, {}, 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step, best, bad = state["epoch"], state["step"], json.loads(state["best"]), state["bad_epochs"]
        if main:
            T.say(f"resuming after epoch {start_epoch}")
    model, optimizer, loader, scheduler = accelerator.prepare(student, optimizer, loader, scheduler)
    raw: ClapStudent = accelerator.unwrap_model(model)

    status, epoch_times, completed = "finished", [], start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        train_ds.epoch = epoch
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        running, seen = 0.0, 0
        for batch in loader:
            if should_stop():
                status = "cancelled"
                break
            with accelerator.accumulate(model):
                audio, text, logit_scale = model(**batch["inputs"])
                loss = loss_fn(audio, text, logit_scale, batch.get("text_base"), batch["weight"])
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
                               "lr": scheduler.get_last_lr()[0], "temperature": float(1 / raw.logit_scale.detach().exp()),
                               "elapsed": time.time() - started})
        if status == "cancelled":
            break
        epoch_times.append(time.time() - t0)
        row = {"kind": "epoch", "epoch": epoch + 1, "step": step, "loss": running / max(1, seen),
               "lr": scheduler.get_last_lr()[0], "temperature": float(1 / raw.logit_scale.detach().exp()),
               "epoch_seconds": epoch_times[-1], "elapsed": time.time() - started,
               "clips_per_second": seen * accelerator.num_processes / max(1e-9, epoch_times[-1]),
               "eta": float(np.mean(epoch_times)) * (cfg.epochs - epoch - 1)}
        if cuda:
            row["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        else:
            import resource
            row["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)   # KiB
        accelerator.wait_for_everyone()
        if main:
            row.update(validate(raw, val_pairs, paths[n:]))
            improved = cfg.keep == "last" or not best or not val_pairs \
                or row.get("val_recall_mean", 0.0) > best.get("val_recall_mean", 0.0)
            bad = 0 if improved else bad + 1
            if improved:
                best = {k: v for k, v in row.items() if k.startswith("val_") or k in ("epoch", "loss")}
            card = T._card(cfg, train_pairs, val_pairs, best, epoch + 1)
            card["training"].update({"student": f"{kind}:{source}", "learning rates": f"{opts.lr} / {opts.head_lr}",
                                     "options": {k: v for k, v in dataclasses.asdict(opts).items()}})
            T._save_last(raw, card, run_dir, optimizer, scheduler, epoch + 1, step, best, bad)
            if improved:
                shutil.copytree(run_dir / "last", run_dir / "best.tmp", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(T.STATE_NAME))
                T._swap(run_dir / "best.tmp", run_dir / "best")
            log.write(row)
            T.say(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}"
                  + (f", val R@1 t2a {row['val_t2a_r1']:.3f}" if "val_t2a_r1" in row else "")
                  + (f", zero-shot {row['val_zero_shot']:.3f}" if "val_zero_shot" in row else "")
                  + f" ({epoch_times[-1]:.1f} s, {row['clips_per_second']:.1f} clips/s, peak "
                  + (f"GPU memory {row['peak_gpu_memory_gb']} GB)" if cuda else f"memory {row['peak_memory_gb']} GB)"))
        completed = epoch + 1
        bad = T._broadcast(bad, accelerator)
        if cfg.patience and bad >= cfg.patience:
            if main:
                T.say(f"early stop: no validation gain for {bad} epochs")
            break
    accelerator.wait_for_everyone()
    result = T.TrainResult(run_id, run_dir, status, completed, best)
    if main and (run_dir / "best" / "config.json").exists() and status == "finished":
        result.model_id, result.model_path = T.register_checkpoint(ws, run_dir / "best", run_id, best)
        T.say(f"registered {result.model_id}")
    return result


__doc__ += "\n".join(f"    {f.name} = {f.default!r}" for f in dataclasses.fields(ClapOptions)) + "\n"
