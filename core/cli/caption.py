"""CLI: `python -m core caption [--teacher NAME] [--only-uncaptioned] [--limit N]`."""
from __future__ import annotations

import json
import threading

from core.store.catalog import ClipQuery
from core.cli.common import command, progress_bar, workspace_from


def register(sub) -> None:
    p = command(sub, "caption", func=cmd_caption, json="print the report as JSON",
                help="caption clips with a teacher (cached, resumable)",
                description="Caption clips with a teacher: embedded (offline, CPU), transformers "
                            "(audio LLM) or openai-compatible (HTTP). Results are cached by clip content, "
                            "teacher and prompt, so re-running costs nothing and an interrupted run "
                            "continues where it stopped. Failures are recorded and the batch goes on.")
    p.add_argument("--teacher", help="embedded | transformers | openai-compatible (default: settings.teacher)")
    p.add_argument("--prompt", help="prompt for LLM teachers (default: the backend's own)")
    p.add_argument("--only-uncaptioned", action="store_true",
                   help="only clips with no caption from this teacher and prompt yet")
    p.add_argument("--clips", help="comma-separated clip ids to caption")
    p.add_argument("--source", help="only clips of this source / dataset")
    p.add_argument("--limit", type=int, help="at most N clips")
    p.add_argument("--force", action="store_true", help="ignore the cache: add a new caption version")
    p.add_argument("--batch-size", type=int, help="clips per teacher call")


def cmd_caption(args) -> int:
    from core.pipeline.captioning import caption_clips, select_clips
    from core.models.teachers import get_teacher

    ws = workspace_from(args)
    teacher = get_teacher(args.teacher, ws.settings, prompt=args.prompt)
    if args.clips:
        ids = select_clips(ws, [int(x) for x in args.clips.split(",") if x.strip()], limit=args.limit)
    elif args.source:
        ids = select_clips(ws, "filter", query=ClipQuery(source=args.source), limit=None)
        if args.only_uncaptioned:
            pending = set(select_clips(ws, "uncaptioned", teacher=teacher))
            ids = [i for i in ids if i in pending]
        ids = ids[:args.limit] if args.limit else ids
    else:
        ids = select_clips(ws, "uncaptioned" if args.only_uncaptioned else "all", teacher=teacher, limit=args.limit)
    bar, progress = progress_bar(width=50, total=len(ids), desc=teacher.name)

    cancel = threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(report=caption_clips(
        ws, ids, teacher, progress=progress, cancel=cancel, force=args.force, batch_size=args.batch_size)))
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        print("\ncancelling after the current batch…")
        worker.join()
    finally:
        bar.close()
    report = result.get("report")
    if report is None:
        return 1
    if args.json:
        print(json.dumps({**{k: v for k, v in report.__dict__.items() if k != "caption_ids"},
                          "teacher": teacher.identity, "prompt": teacher.prompt}))
    else:
        print(report.summary())
        for clip_id, error in report.failures[:20]:
            print(f"  clip {clip_id}: {error}")
    if report.cancelled:
        return 130
    return 1 if report.failed and not (report.captioned or report.reused or report.skipped) else 0
