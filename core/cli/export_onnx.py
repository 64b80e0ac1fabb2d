"""Export a student to ONNX and prove it agrees with PyTorch.

    python -m core export-onnx --model shipped|ID|PATH [--out DIR] [--opset 17] [--clips DIR]

Works for every student kind: embedded (training/export_onnx.py), clap and combine (their audio and text
towers; training/export_onnx_pretrained.py; a fusion CLAP is refused).
Writes the files core/models/onnx_student.py reads (default: `<checkpoint>/onnx/`), then embeds real clips
and captions with both runtimes and prints their cosine agreement. `onnx_config.json`, the file
that makes the app serve the export, is written only when every clip and every text agrees to
cosine ≥ 0.999 (the `--min-cosine`).

(Also `python -m training export-onnx`; the export itself: training/export_onnx.py.)
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from core.cli.common import command, workspace_if_any


def register(sub) -> None:
    p = command(sub, "export-onnx", func=cmd_export, failures=(KeyError, FileNotFoundError, ValueError),
                json="end with one JSON line of the report", workspace="workspace folder (for model ids)",
                help="export a student's audio and text towers to ONNX and verify them",
                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shipped", help="'shipped', a workspace model id, or a checkpoint folder")
    p.add_argument("--out", help="output folder (default: <checkpoint>/onnx, where the app looks for it)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--clips", help="a folder of real clips to verify on (default: assets/demo)")
    p.add_argument("--min-cosine", type=float, help="the agreement the export must reach (default 0.999)")


def cmd_export(args) -> int:
    from core.models import onnx_student as ox
    from core.models import registry as models
    from training.export_onnx import MIN_COSINE, demo_texts, demo_waves, export
    ws = workspace_if_any(args, needed=False)     # model ids live in a workspace; never create one here
    folder = models.resolve_path(args.model, ws)
    options = dict(opset=args.opset, waves=demo_waves(args.clips), texts=demo_texts(args.clips),
                   min_cosine=MIN_COSINE if args.min_cosine is None else args.min_cosine)
    kind = models.checkpoint_kind(folder)
    if kind == "embedded":
        from core.models.student import Student
        report = export(Student.load(folder), args.out or ox.export_dir(folder), **options)
    else:                                         # clap / combine: training/export_onnx_pretrained.py
        from training.export_onnx_pretrained import export_pretrained
        student = models.load_torch(str(folder), "cpu")
        report = export_pretrained(student, args.out or ox.export_dir(folder), **options)
    print(report.summary())
    if args.json:
        print(json.dumps(asdict(report) | {"ok": report.ok}))
    return 0 if report.ok else 1
