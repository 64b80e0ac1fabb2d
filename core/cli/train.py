"""`python -m core train` (alias `python -m training train`): train a student from the shell (the Train tab
runs exactly this).

    python -m training train --workspace W --epochs 10 --loss soft --beta 0.3
    python -m training train --workspace W --resume                 # continue the newest unfinished run
    python -m training train --workspace W --student clap:laion/clap-htsat-unfused   # fine-tune CLAP (GPU)
    accelerate launch -m training train --workspace W ...           # several GPUs
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from core.cli.common import add_dataclass_flags, command, workspace_from

def register(sub) -> None:
    from training.config import ClapOptions, TrainConfig
    p = command(sub, "train", func=cmd_train, interrupted="interrupted; resume with --resume",
                help="train a student on the workspace's caption pairs",
                description="Contrastive training of the student on reviewed (and optionally unreviewed) "
                            "caption pairs. Writes runs/run-NNNN/{metrics.jsonl,last/,best/} and registers "
                            "best/ as a model: the final epoch (--keep last, the default) or the epoch "
                            "with the best validation recall (--keep best, with --patience).")
    p.add_argument("--config", help="a JSON or TOML file of training settings (flags override it)")
    add_dataclass_flags(p, TrainConfig)
    p.add_argument("--source", dest="sources", action="append", help="train only on this source (repeatable)")
    p.add_argument("--student", dest="backbone", metavar="KIND[:ID]",
                   help="student backbone: 'embedded' (default; the small CPU model), 'clap:<hub id or folder>' "
                        "(fine-tunes a CLAP model, e.g. clap:laion/clap-htsat-unfused) or "
                        "'combine:<audio encoder>+<sentence-transformers model>' (e.g. "
                        "combine:facebook/wav2vec2-base+minilm, minilm being the packaged text model); "
                        "a GPU is advised for both")
    add_dataclass_flags(p, ClapOptions, dest_prefix="opt_")      # `--student clap:...` / `combine:...` options
    p.add_argument("--no-gradient-checkpointing", dest="opt_gradient_checkpointing", action="store_const",
                   const=False, help="clap/combine: keep activations (faster, more GPU memory)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint (of --run-dir, "
                                                          "else the newest unfinished run)")
    p.add_argument("--run-dir", help="run folder (set by the Train tab)")
    p.add_argument("--run-id", type=int, help="catalogue run id (set by the Train tab)")


def build_config(args) -> dict:
    from training.config import TrainConfig, load_config_file
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    flags = [f.name for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]
    for name in flags + ["sources", "backbone"]:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    if options:
        values["backbone_options"] = {**values.get("backbone_options", {}), **options}
    return values


def cmd_train(args) -> int:
    from core.models.clap_student import ModelUnavailable
    from core.store.workspace import parse_run_id
    from training import jobs
    from training.loop import latest_resumable_run
    from training.train import TrainConfig

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
            args.run_id = parse_run_id(run_dir)
    cfg = TrainConfig.from_dict(values)

    stop = {"flag": False}

    def on_signal(signum, frame):   # Cancel in the UI: finish the current step, keep the last checkpoint
        stop["flag"] = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        result = _train_holding_run(ws, cfg, args, run_dir, should_stop=lambda: stop["flag"])
    except (jobs.RunBusy, ModelUnavailable) as exc:   # a live run, or a backbone whose weights are not here
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    """`train` with these arguments, as `python -m training train ...` runs it."""
    from core.cli.common import main as tree
    return tree(["train", *(sys.argv[1:] if argv is None else argv)], prog="python -m training",
                commands=["core.cli.train"])
