"""Fine-tune a pretrained student: training/train.py's run for the `clap` and `combine` backbones.

    python -m training train --workspace W --student clap:laion/clap-htsat-unfused --epochs 5 --batch-size 64
    python -m training train --workspace W --student combine:facebook/wav2vec2-base+minilm

- `clap:<hub id, folder or model id>`: core.models.clap_student.ClapStudent (a transformers ClapModel);
- `combine:<audio encoder>+<sentence-transformers model>`: core.models.combine_student.CombineStudent.

`run_training` hands over here when `TrainConfig.backbone` is not `embedded`: same run folder, catalogue
row, metrics.jsonl, last/ + best/ checkpoints, resume, registration and losses (InfoNCE / soft, with
negatives gathered across processes). What differs: the model sees raw audio (16 kHz clips cached on disk
as float16, cropped at random to the model's window each epoch) instead of cached tagger features, and
these options (`TrainConfig.backbone_options`, or the flags of core/cli/train.py):
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from core.models import clap_student, combine_student, zero_shot
from core.models.clap_student import ClapStudent
from core.pipeline.metrics import retrieval_report, zero_shot_accuracy
from core.store.files import atomic_write
from training import data as D
from training.anchor import trainable_weights
from training.config import ClapOptions, parse_backbone
from training.loop import TrainState, fit, load_state, prepare, say, split_pairs
from training.losses import make_loss

KINDS = ("embedded", "clap", "combine")


def load_student(kind: str, source: str, ws=None, checkpoint: Path | None = None):
    """The starting model: a run's checkpoint when resuming, else the pretrained source."""
    if kind == "clap":
        return ClapStudent.load(checkpoint) if checkpoint else ClapStudent.from_pretrained(source, ws)
    cls = combine_student.CombineStudent
    return cls.load(checkpoint) if checkpoint else cls.from_sources(*combine_student.parse(source), ws=ws)


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


# The towers' attention projections LoRA adapts: RoBERTa / BERT / HTSAT / AST name them query/key/value,
# wav2vec2 / HuBERT / Whisper q_proj/k_proj/v_proj, MPNet q/k/v.
LORA_TARGETS = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "q", "k", "v")


def towers(student) -> tuple[str, ...]:
    """Parameter-name prefixes of the student's two pretrained towers (the rest is the trained head)."""
    if isinstance(student, combine_student.CombineStudent):
        return "encoder.", "text_model."
    return "model.audio_model.", "model.text_model."


def add_lora(student, rank: int, alpha: float) -> None:
    """peft LoRA adapters on every attention projection of both towers, injected in place (the student
    keeps its type and parameter names); the towers' own weights freeze, the head (projections and
    temperature) keeps training. Checkpoints save the adapters merged (core.models.pretrained.merge_adapters)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise RuntimeError("LoRA needs the peft package: `pip install peft`, or train without --lora-rank") from None
    prefixes = towers(student)
    tower = "|".join(re.escape(p) for p in prefixes)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05,
                        target_modules=rf"({tower}).*\.({'|'.join(LORA_TARGETS)})")
    head = [p for name, p in student.named_parameters() if p.requires_grad and not name.startswith(prefixes)]
    with warnings.catch_warnings():      # peft reads transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing")
        try:
            inject_adapter_in_model(config, student)
        except ValueError as exc:        # no attention projection under those names
            raise ValueError(f"LoRA found no attention layer to adapt ({exc})") from None
    for p in head:                       # peft froze everything but its adapters
        p.requires_grad_(True)


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
    tower, head, scale = [], [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if "logit_scale" in name:
            scale.append(p)
        elif name.startswith(towers(student)):   # by place, not name: wav2vec2's q_proj is a tower's
            tower.append(p)
        else:                                  # CLAP's audio/text_projection, the combined student's audio/text_proj
            head.append(p)
    groups = [{"params": tower, "lr": opts.lr, "weight_decay": weight_decay},
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
            with atomic_write(paths[i]) as tmp:
                np.save(tmp, np.asarray(ws.load_clip(pairs[i].clip_id), np.float16))
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
    """training/train.py `_train`'s counterpart for the clap and combine backbones; returns a loop.TrainResult."""
    return fit(prepare_clap(ws, cfg, accelerator, run_id, run_dir, log, resume, should_stop, started))


def prepare_student(cfg, accelerator, run_id, ws, checkpoint: Path | None, kind: str, source: str,
                    opts: ClapOptions):
    """The pretrained student (or a resumed run's `checkpoint`) with its frozen layers, LoRA and
    gradient checkpointing in place."""
    cuda = accelerator.device.type == "cuda"
    student = load_student(kind, source, ws, checkpoint)
    student.name = cfg.name if cfg.name != "hearsay-student" else f"hearsay-{kind}"
    student.meta["base_model"] = student.meta.get("base_model") if checkpoint else source
    if opts.lora_rank > 0:               # first, so frozen layers' adapters freeze with them
        add_lora(student, opts.lora_rank, opts.lora_alpha)
    freeze_layers(student, opts.freeze_audio_layers, opts.freeze_text_layers)
    checkpointed = enable_checkpointing(student) if cuda and opts.gradient_checkpointing else 0
    student.train()
    if accelerator.is_main_process:
        trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
        total = sum(p.numel() for p in student.parameters())
        say(f"run {run_id}: {kind} student from {source}: {trainable:,} of {total:,} parameters train"
            + (f", LoRA rank {opts.lora_rank}" if opts.lora_rank else "")
            + (f", gradient checkpointing on {checkpointed} layers" if checkpointed else "")
            + f"; device {accelerator.device}, precision {accelerator.mixed_precision}, "
              f"{accelerator.num_processes} process(es)")
    return student


def prepare_clap(ws, cfg, accelerator, run_id, run_dir: Path, log, resume: bool, should_stop, started):
    """The student, the wave cache of every pair, the loader and the loss; then loop.prepare."""
    main = accelerator.is_main_process
    kind, source = parse_backbone(cfg.backbone)
    opts = ClapOptions.from_dict(cfg.backbone_options)
    cuda = accelerator.device.type == "cuda"
    saved = load_state(run_dir) if resume else None
    student = prepare_student(cfg, accelerator, run_id, ws, run_dir / "last" if saved else None, kind, source, opts)
    start_weights = None
    if cfg.wise < 1:                     # WiSE-FT toward the pretrained model (a resumed run rebuilds it)
        start = prepare_student(cfg, accelerator, run_id, ws, None, kind, source, opts) if saved else student
        start_weights = trainable_weights(start)
        del start

    kwargs = dict(unreviewed_weight=cfg.unreviewed_weight, import_weight=cfg.import_weight,
                  sources=cfg.sources or None, min_confidence=cfg.min_confidence)
    if getattr(cfg, "teacher_replay", 0):
        kwargs["teacher_replay"] = cfg.teacher_replay
    train_pairs, val_pairs = split_pairs(cfg, D.collect_pairs(ws, **kwargs), main)
    progress = (lambda d, t, m: say(f"{m}: {d}/{t}")) if main else None
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
        say(f"{len(unused)} parameter(s) get no gradient and stay fixed: {', '.join(unused[:4])}"
            + (" ..." if len(unused) > 4 else ""))
    loss_fn = make_loss(cfg.loss, cfg.beta, cfg.distill)

    def compute_loss(state: TrainState, batch: dict) -> torch.Tensor:
        audio, text, logit_scale = state.model(**batch["inputs"])
        return loss_fn(audio, text, logit_scale, batch.get("text_base"), batch["weight"])

    def begin_epoch(epoch: int) -> None:
        train_ds.epoch = epoch

    state = TrainState(ws, cfg, accelerator, run_id, run_dir, log, should_stop, started, train_pairs, val_pairs,
                       compute_loss=compute_loss, validate=lambda raw: validate(raw, val_pairs, paths[n:]),
                       begin_epoch=begin_epoch, epoch_extras=lambda seen, seconds: _usage(accelerator, seen, seconds),
                       describe=_describe_usage, lr_group=0, start_weights=start_weights,
                       card_training={"student": f"{kind}:{source}", "learning rates": f"{opts.lr} / {opts.head_lr}",
                                      "options": {k: v for k, v in dataclasses.asdict(opts).items()}})
    return prepare(state, student, loader, param_groups(student, opts, cfg.weight_decay), saved)


def _usage(accelerator, seen: int, seconds: float) -> dict:
    """Throughput and peak memory of the epoch, for the metrics row (the Train tab's status line shows them)."""
    row = {"clips_per_second": seen * accelerator.num_processes / max(1e-9, seconds)}
    if accelerator.device.type == "cuda":
        row["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        import resource
        row["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)   # KiB
    return row


def _describe_usage(row: dict) -> str:
    return (f", {row['clips_per_second']:.1f} clips/s, peak "
            + (f"GPU memory {row['peak_gpu_memory_gb']} GB" if "peak_gpu_memory_gb" in row
               else f"memory {row['peak_memory_gb']} GB"))


__doc__ += "\n".join(f"    {f.name} = {f.default!r}" for f in dataclasses.fields(ClapOptions)) + "\n"
