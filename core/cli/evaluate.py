"""CLI: `python -m core evaluate` (alias `python -m training evaluate`), training/evaluate.py from the shell.

    python -m core evaluate --model MODEL --data FOLDER [--json] [--templates T ...] [--fusion W]

With --json the last line on stdout is exactly one JSON object (training.evaluate.SUMMARY_KEYS);
progress goes to stderr.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from core.cli.common import cancel_on_interrupt, command, progress_bar, workspace_if_any


def register(sub) -> None:
    # a bad folder, an unknown model, weights not on disk: one line, exit code 2
    p = command(sub, "evaluate", func=cmd_evaluate, failures=(OSError, ValueError, RuntimeError),
                json="end with one JSON line of the headline numbers",
                workspace="workspace folder (for model ids and --save)",
                help="zero-shot accuracy and retrieval R@k of a model on a labelled folder",
                description="Evaluate a model on a labelled folder: audio files plus meta.csv with filename and "
                            "label and/or caption (audio under audio/ or beside the csv). Prints zero-shot "
                            "accuracy, text→audio and audio→text R@1/5/10 and mAP@10.")
    p.add_argument("--model", required=True,
                   help="'shipped', 'teacher' (embedded-teacher captions + MiniLM), 'clap' (local weights only), "
                        "a workspace model id, a model folder, or package.module:factory")
    p.add_argument("--data", required=True,
                   help="labelled folder, or 'workspace' for the workspace's clips whose import meta has a label")
    p.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                   help="zero-shot prompt templates with {label}, averaged (default: 'the sound of {label}')")
    p.add_argument("--save", action="store_true", help="store the result in the workspace's evaluation history")
    p.add_argument("--limit", type=int, help="evaluate N clips spread evenly over the set (a quick look)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="cpu | cuda | mps (default: the model's own choice)")
    p.add_argument("--details", metavar="FILE", help="also write the full report (per-class, confusion) as JSON")
    p.add_argument("--fusion", nargs="?", type=float, const=-1.0, metavar="W",
                   help="also score the teacher's captions alone and the model fused with them, z-scored per "
                        "query and query-adaptive, W (0..1) the captions' weight (bare --fusion: setting fusion_weight). Captions: "
                        "published ones for --data workspace, else the embedded teacher's (cached in the workspace)")


def cmd_evaluate(args) -> int:
    from training import evaluate as ev

    ws = workspace_if_any(args, needed=args.save or args.data == "workspace")
    data = ev.load_data(args.data, ws)
    if args.limit and args.limit < len(data.items):
        keep = np.unique(np.linspace(0, len(data.items) - 1, args.limit).round().astype(int))
        data.items = [data.items[i] for i in keep]
    for name in data.missing:
        print(f"missing: {name} is in meta.csv but not in the folder", file=sys.stderr)

    model = ev.resolve_model(args.model, ws, args.device)
    bar, progress = progress_bar(width=30, total=len(data.items), file=sys.stderr, disable=None)

    fusion, side = getattr(args, "fusion", None), None
    if fusion is not None:
        if fusion < 0:
            from core.store.settings import load_settings
            fusion = (ws.settings if ws is not None else load_settings()).fusion_weight
        side = ev.TeacherCaptions(ws.cache_dir / "teacher_baseline_captions.jsonl" if ws is not None else None,
                                  args.device)
    with cancel_on_interrupt(bar) as cancel:
        result = ev.evaluate(model, data, name=args.model, templates=args.templates or ev.DEFAULT_TEMPLATES,
                             batch_size=args.batch_size, progress=progress, cancel=cancel,
                             fusion=fusion, caption_side=side)
    for line in result.failed:
        print(f"unreadable: {line}", file=sys.stderr)
    if args.save:
        ev.record(ws, result)
    if args.details:
        with open(args.details, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=1, ensure_ascii=False)
    if args.json:
        print(json.dumps(result.summary(), ensure_ascii=False))
    else:
        print(format_report(result))
    return 0


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:5.1f} %"


def format_report(result) -> str:
    lines = [f"model {result.model} ({result.model_id})", f"data  {result.data}  [{result.fingerprint}]",
             f"clips {result.clips}  queries: {result.queries}  templates: {result.templates}", ""]
    lines.append(f"zero-shot accuracy  {_pct(result.zero_shot_acc)}")
    for direction in ("t2a", "a2t"):
        lines.append(f"{direction} R@1/5/10      " + "  ".join(_pct(getattr(result, f"{direction}_r{k}"))
                                                              for k in (1, 5, 10)))
    lines.append(f"mAP@10 (t2a)        {_pct(result.map10)}")
    if result.fusion is not None:
        lines += ["", f"late fusion, caption weight {result.fusion:g} (z-scored, query-adaptive):",
                  f"{'':20}{'model':>9}{'captions':>10}{'fused':>9}"]
        for key in ("zero_shot_acc", "t2a_r1", "t2a_r5", "t2a_r10", "a2t_r1", "a2t_r5", "map10"):
            lines.append(f"  {key:18}{_pct(getattr(result, key)):>9}{_pct(result.captions.get(key)):>10}"
                         f"{_pct(result.fused.get(key)):>9}")
    if result.per_class_acc:
        lines += ["", "per-class accuracy (worst first):"]
        worst = sorted(result.per_class_acc.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0, kv[0]))
        lines += [f"  {_pct(acc)}  {label}" for label, acc in worst]
    if result.failed or result.missing:
        lines.append(f"\n{len(result.failed)} unreadable, {len(result.missing)} missing from the folder")
    lines.append(f"\n{result.seconds:.1f} s")
    return "\n".join(lines)
