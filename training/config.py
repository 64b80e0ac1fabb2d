"""Training settings: `TrainConfig` (every knob of a run) and `ClapOptions` (the clap / combine backbones'
own), as dataclasses whose fields with a `help` are also the `train` command's flags (core/cli/train.py),
and `parse_backbone` (the student a `backbone` setting names). Nothing here imports torch at import time,
so the command tree starts quickly.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


def flag(default, help: str, **meta):
    """A TrainConfig field that is also a command-line flag (as HfArgumentParser reads dataclass fields)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Every knob, with the defaults the Train tab shows. Overridable by --config FILE and flags: each field
    with a `help` (see `flag`) is a `python -m training train --field-name` option (core/cli/train.py)."""
    base_model: str = flag("shipped", "shipped | fresh | a workspace model id | a checkpoint folder")
    epochs: int = flag(20, "passes over the training pairs")
    batch_size: int = flag(128, "pairs per step")
    grad_accum: int = flag(1, "steps whose gradients add up before each optimizer step")
    lr: float = flag(3e-4, "learning rate of the residual MLP and the log-mel branch")
    prior_lr: float = flag(3e-4, "learning rate of the class-name prior, class weights, text projection "
                                 "and temperature")
    text_lr: float = flag(2e-5, "learning rate of the fine-tuned MiniLM layers")
    weight_decay: float = flag(0.01, "AdamW weight decay")
    warmup_steps: int = flag(10, "linear warm-up steps before the cosine decay")
    # see README: infonce + distill measured best
    loss: str = flag("infonce", "contrastive loss", choices=["infonce", "soft"])
    beta: float = flag(0.3, "soft-label share given to caption similarity (loss soft)")
    distill: float = flag(1.0, "weight of a cosine pull of each clip onto its own caption")
    # No forgetting (issue 15; benchmarks/review_gain.py, 3 seeds): with every clip reviewed, the anchor and
    # teacher replay kept out-of-domain zero-shot at the 0-review level (39 vs 30 % without) for ~4 points
    # in-domain; with nothing reviewed both are inactive, so leave-one-set-out is unchanged. Since the
    # words channel and generic fade, anchor 1 keeps as much out of domain (53.6 vs 53.2 at anchor 2, 53.8
    # unreviewed) for less in-domain cost (79.6 vs 78.1; plain 84.4).
    anchor: float = flag(1.0, "pull each clip's audio embedding toward the starting model's (training/anchor.py)")
    anchor_follows_review: bool = True   # scale `anchor` by the share of reviewed pairs (0 reviewed: no pull)
    weight_anchor: float = flag(0.0, "L2 pull of the trainable weights toward their starting values")
    teacher_replay: float = flag(0.5, "reviewed clips also keep their teacher caption, at this weight (0: off)")
    # WiSE-FT 0.75 (benchmarks, seed 0): leave-one-set-out text→audio mAP@10 +0.03 to +0.15 on three sets
    # (medley zero-shot 71 → 79 %) for about 1 point in-domain (cv; fsdd's spoken digits −6) and −0.6 at
    # review_gain's "all"; 0.5 gained more out of domain but cost 7 points of reviewed in-domain accuracy
    wise: float = flag(0.75, "the saved model is start + WISE × (trained − start) (WiSE-FT; 1: the trained "
                             "weights); keeps what the starting model knew of sounds unlike the workspace's")
    train_text_proj: bool = True         # False keeps the text side exactly MiniLM (prompts stay where they were)
    unreviewed_weight: float = flag(0.5, "weight of teacher captions nobody reviewed (0: leave them out)")
    import_weight: float = flag(1.0, "weight of captions that came with imported metadata")
    min_confidence: float = flag(0.0, "leave out teacher captions below this confidence")
    sources: list[str] = field(default_factory=list)   # restrict to these sources (empty: all)
    val_fraction: float = flag(0.1, "share of recordings held out for validation")
    # keep=last: the cosine schedule ends at 0; keep=best favours early epochs (measured: the log-mel branch
    # was still learning after them)
    keep: str = flag("last", "best/ is the final epoch (last) or the one with the best validation recall (best)",
                     choices=["last", "best"])
    patience: int = flag(3, "with --keep best: epochs without validation gain before stopping (0: never)")
    crop_min: float = flag(0.6, "shortest random crop, as a share of the clip")
    seed: int = flag(0, "random seed")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    mixed_precision: str = flag("auto", "auto | no | bf16 | fp16")
    text_trainable_layers: int = flag(-1, "MiniLM layers to fine-tune (-1: as the base model has it)")
    student: dict = field(default_factory=dict)        # StudentConfig values for base_model="fresh"
    name: str = flag("hearsay-student", "the model's name")
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


def option(default, flag: str, help: str):
    """A ClapOptions field that is also a `python -m training train` flag (core/cli/train.py)."""
    metavar = "LR" if isinstance(default, float) else "N"
    return field(default=default, metadata={"flag": flag, "help": help, "metavar": metavar})


@dataclass
class ClapOptions:
    lr: float = option(1e-5, "--clap-lr", "clap/combine: learning rate of the encoder towers")
    # (with LoRA: the adapters' learning rate, try 1e-4)
    head_lr: float = option(1e-4, "--head-lr", "clap/combine: learning rate of the projections and temperature")
    # the bottom N HTSAT stages (+ patch embedding) / RoBERTa layers (+ embeddings) stay fixed
    freeze_audio_layers: int = option(0, "--freeze-audio-layers",
                                      "clap/combine: bottom N audio stages stay fixed (-1: the whole tower)")
    freeze_text_layers: int = option(0, "--freeze-text-layers",
                                     "clap/combine: bottom N text layers stay fixed (-1: the whole tower)")
    # > 0: peft LoRA adapters on both towers' attention projections instead of fine-tuning their weights;
    # checkpoints save them merged (plain weights)
    lora_rank: int = option(0, "--lora-rank", "clap/combine: train LoRA adapters of this rank on the towers' "
                                              "attention instead of their weights")
    lora_alpha: float = 16.0
    gradient_checkpointing: bool = True    # CUDA only: recompute activations to fit bigger batches
    num_workers: int = option(-1, "--workers", "clap/combine: data loader processes (-1: 4 on CUDA, 0 on CPU)")

    @classmethod
    def from_dict(cls, values: dict | None) -> "ClapOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values or {}) - known
        if unknown:
            raise ValueError(f"unknown CLAP option(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**(values or {}))


def parse_backbone(spec: str | None) -> tuple[str, str]:
    """`embedded` | `clap[:<repo-or-folder-or-model-id>]` | `combine:<audio>[+<text>]` → (kind, id)."""
    from core.models import combine_student
    from core.models.clap_student import DEFAULT_REPO
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
