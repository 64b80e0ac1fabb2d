"""`python -m training train`: train a student from the shell (the Train tab runs exactly this).

    python -m training train --workspace W --epochs 10 --loss soft --beta 0.3
    python -m training train --workspace W --resume                 # continue the newest unfinished run
    python -m training train --workspace W --student clap:laion/clap-htsat-unfused   # fine-tune CLAP (GPU)
    accelerate launch -m training train --workspace W ...           # several GPUs
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

# flag → TrainConfig field (the flag's type comes from the field's default)
FLAGS = {
    "--epochs": "epochs", "--batch-size": "batch_size", "--grad-accum": "grad_accum", "--lr": "lr",
    "--prior-lr": "prior_lr", "--text-lr": "text_lr", "--weight-decay": "weight_decay", "--loss": "loss",
    "--beta": "beta", "--distill": "distill", "--base-model": "base_model", "--unreviewed-weight": "unreviewed_weight",
    "--import-weight": "import_weight", "--min-confidence": "min_confidence", "--val-fraction": "val_fraction",
    "--patience": "patience", "--seed": "seed", "--device": "device", "--mixed-precision": "mixed_precision",
    "--text-trainable-layers": "text_trainable_layers", "--name": "name", "--warmup-steps": "warmup_steps",
    "--crop-min": "crop_min", "--keep": "keep",
    "--anchor": "anchor", "--weight-anchor": "weight_anchor", "--teacher-replay": "teacher_replay",
}


def register(sub) -> None:
    from training.train import TrainConfig
    defaults = TrainConfig()
    p = sub.add_parser("train", help="train a student on the workspace's caption pairs",
                       description="Contrastive training of the student on reviewed (and optionally unreviewed) "
                                   "caption pairs. Writes runs/run-NNNN/{metrics.jsonl,last/,best/} and registers "
                                   "best/ as a model: the final epoch (--keep last, the default) or the epoch "
                                   "with the best validation recall (--keep best, with --patience).")
    p.add_argument("--workspace", default=argparse.SUPPRESS, help="workspace folder")
    p.add_argument("--config", help="a JSON or TOML file of training settings (flags override it)")
    for flag, name in FLAGS.items():
        value = getattr(defaults, name)
        kwargs = {"choices": {"loss": ["infonce", "soft"], "keep": ["last", "best"]}[name]} \
            if name in ("loss", "keep") else {}
        p.add_argument(flag, dest=name, type=type(value), default=None, help=f"default {value!r}", **kwargs)
    p.add_argument("--source", dest="sources", action="append", help="train only on this source (repeatable)")
    p.add_argument("--student", dest="backbone", metavar="KIND[:ID]",
                   help="student backbone: 'embedded' (default; the small CPU model), 'clap:<hub id or folder>' "
                        "(fine-tunes a CLAP model, e.g. clap:laion/clap-htsat-unfused) or "
                        "'combine:<audio encoder>+<sentence-transformers model>' (e.g. "
                        "combine:facebook/wav2vec2-base+minilm, minilm being the packaged text model); "
                        "a GPU is advised for both")
    for flag, (name, kind, text) in CLAP_FLAGS.items():
        p.add_argument(flag, dest=f"opt_{name}", type=kind, metavar="N" if kind is int else "LR", help=text)
    p.add_argument("--no-gradient-checkpointing", dest="opt_gradient_checkpointing", action="store_const",
                   const=False, help="clap/combine: keep activations (faster, more GPU memory)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint (of --run-dir, "
                                                          "else the newest unfinished run)")
    p.add_argument("--run-dir", help="run folder (set by the Train tab)")
    p.add_argument("--run-id", type=int, help="catalogue run id (set by the Train tab)")
    p.set_defaults(func=cmd_train)


# flag → train_clap.ClapOptions field, for `--student clap:...` / `combine:...` (TrainConfig.backbone_options)
CLAP_FLAGS = {
    "--freeze-audio-layers": ("freeze_audio_layers", int, "clap/combine: bottom N audio stages stay fixed (-1: the whole tower)"),
    "--freeze-text-layers": ("freeze_text_layers", int, "clap/combine: bottom N text layers stay fixed (-1: the whole tower)"),
    "--lora-rank": ("lora_rank", int, "clap: train LoRA adapters of this rank instead of the towers (needs peft)"),
    "--clap-lr": ("lr", float, "clap/combine: learning rate of the encoder towers (default 1e-5)"),
    "--head-lr": ("head_lr", float, "clap/combine: learning rate of the projections and temperature (default 1e-4)"),
    "--workers": ("num_workers", int, "clap/combine: data loader processes (default 4 on CUDA, 0 on CPU)"),
}


def build_config(args) -> dict:
    values: dict = {}
    if getattr(args, "config", None):
        from training.train import load_config_file
        values.update(load_config_file(args.config))
    for name in list(FLAGS.values()) + ["sources", "backbone"]:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    if options:
        values["backbone_options"] = {**values.get("backbone_options", {}), **options}
    return values


def cmd_train(args) -> int:
    from core.models.clap_student import ModelUnavailable
    from core.cli.library import workspace_from
    from training import jobs
    from training.train import TrainConfig, latest_resumable_run

    ws = workspace_from(args)
    jobs.reconcile(ws)          # rows left `running` by a killed process (kill -9) → failed, before picking a run
    run_dir = Path(args.run_dir) if args.run_dir else None
    values = build_config(args)
    if args.resume:
        run_dir = run_dir or latest_resumable_run(ws)
        if run_dir is None:
            print("nothing to resume: no unfinished run with a checkpoint", file=sys.stderr)
            return 2
        saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
        values = {**saved, **values}
        if args.run_id is None:
            args.run_id = int(run_dir.name.split("-")[-1])
    cfg = TrainConfig.from_dict(values)

    stop = {"flag": False}

    def on_signal(signum, frame):   # Cancel in the UI: finish the current step, keep the last checkpoint
        stop["flag"] = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        result = _train_holding_run(ws, cfg, args, run_dir, should_stop=lambda: stop["flag"])
    except jobs.RunBusy as exc:
        print(exc, file=sys.stderr)
        return 2
    except ModelUnavailable as exc:      # a student backbone whose weights are not on this machine
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    except InterruptedError:
        print("cancelled; resume with --resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps({"run_id": result.run_id, "status": result.status, "epochs": result.epochs_done,
                      "model_id": result.model_id, "run_dir": str(result.run_dir), "best": result.best}))
    return 0 if result.status == "finished" else 130


def _train_holding_run(ws, cfg, args, run_dir: Path | None, should_stop):
    """Train while holding the run folder's lock, so a second `--resume` of a live run is refused.
    Only the main process of a multi-process launch takes it (they all share one folder)."""
    from training.jobs import run_lock
    from training.train import run_training
    if run_dir is None or int(os.environ.get("RANK", "0")) != 0:
        return run_training(ws, cfg, run_id=args.run_id, run_dir=run_dir, resume=args.resume, should_stop=should_stop)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return run_training(ws, cfg, run_id=args.run_id, run_dir=run_dir, resume=args.resume, should_stop=should_stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)
