"""CLI: `index` (sync the Chroma index with the catalogue) and `search` (text, audio, clip, zero-shot labels)."""
from __future__ import annotations

import json
import sys

from core.cli.common import RERUN, cancel_on_interrupt, command, progress_bar, workspace_from

SEARCH_MAX_NEW = 500       # a search embeds new clips itself only when this few are waiting (as the app does)


def register(sub) -> None:
    p = command(sub, "index", func=cmd_index, interrupted=RERUN, json="print the report as JSON",
                help="embed new or changed clips into the model's Chroma collection",
                description="Bring the model's Chroma collection in line with the catalogue: embed new "
                            "clips, update changed metadata, drop deleted clips. Safe to interrupt.")
    p.add_argument("--rebuild", action="store_true",
                   help="recreate the collection from scratch (built beside the old one, which keeps serving "
                        "searches until the new one is complete)")
    p.add_argument("--model", default="active", help="model name or id (default: the active model)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-captions", action="store_true", help="skip the caption (MiniLM) collection")

    p = command(sub, "search", func=cmd_search, json="print JSON",
                help="search clips by text, audio or clip; or classify against labels",
                description="Text → clips (QUERY), audio → clips (--audio FILE), more like a clip "
                            "(--clip ID); with --labels, zero-shot classify the --audio file or --clip.")
    p.add_argument("query", nargs="?", default="", help="what to look for, e.g. \"rain on a tin roof\"")
    p.add_argument("--k", type=int, default=10, help="results per page")
    p.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    p.add_argument("--audio", help="an audio file: find clips that sound like it (or classify it with --labels)")
    p.add_argument("--clip", type=int, help="a clip id: more like this (or classify it with --labels)")
    p.add_argument("--labels", help="comma-separated labels for zero-shot classification")
    p.add_argument("--template", action="append", help="prompt template with {label} (repeatable); "
                                                       "default: 'the sound of {label}'")
    p.add_argument("--scale", type=float, help="softmax scale (default: the model's, else 100)")
    p.add_argument("--status", action="append", default=[], help="review status filter (repeatable)")
    p.add_argument("--source", action="append", default=[], help="source filter (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="tag filter, any of (repeatable)")
    p.add_argument("--min-duration", type=float)
    p.add_argument("--max-duration", type=float)
    p.add_argument("--recording", type=int, help="only clips of this recording")
    p.add_argument("--window", nargs=2, type=float, metavar=("START", "END"),
                   help="only clips overlapping this time window of their recording (seconds)")
    p.add_argument("--hybrid", type=float, default=None,
                   help="weight of caption-text similarity, 0..1, z-scored query-adaptive late fusion "
                        "(default: setting fusion_weight)")
    p.add_argument("--model", default="active", help="model name or id (default: the active model)")


def cmd_index(args) -> int:
    from core.pipeline import index
    ws = workspace_from(args)
    embedder = index.resolve_embedder(ws, args.model)   # ModelUnavailable: core/cli/common.run
    bar, progress = progress_bar(leave=False)
    with cancel_on_interrupt(bar) as cancel:
        report = index.sync(ws, embedder, rebuild=args.rebuild, batch_size=args.batch_size,
                            captions=not args.no_captions, progress=progress, cancel=cancel)
    print(json.dumps({**report.__dict__, "failed": report.failed}) if args.json else report.summary())
    return 1 if report.failed and not report.embedded else 0


def _filters(args):
    from core.pipeline.search import Filters
    window = args.window or (None, None)
    return Filters(status=args.status, source=args.source, tags=args.tag, min_duration=args.min_duration,
                   max_duration=args.max_duration, recording_id=args.recording,
                   window_start=window[0], window_end=window[1])


def cmd_search(args) -> int:
    from core.pipeline import index
    ws = workspace_from(args)
    embedder = index.resolve_embedder(ws, args.model)   # ModelUnavailable: core/cli/common.run
    try:
        _catch_up(ws, embedder, args)
        if args.labels:
            _classify(ws, embedder, args)
            return 0
        page = _search(ws, embedder, args)
    except index.IndexUnavailable as exc:       # e.g. a rebuild in another process: a plain message
        raise SystemExit(f"error: {exc}")
    if args.json:
        print(json.dumps(page.to_dict(), ensure_ascii=False))
    else:
        _print_page(page, args)
    return 0


def _catch_up(ws, embedder, args) -> None:
    """Index a few new clips before answering; more than SEARCH_MAX_NEW wait for `index`."""
    from core.pipeline import index
    bar, progress = progress_bar(leave=False)
    with cancel_on_interrupt(bar):
        report = index.ensure_current(ws, embedder, max_new=SEARCH_MAX_NEW, progress=progress)
    if report is not None and (report.embedded or report.failed) and not args.json:
        print(report.summary())
    if report is not None and report.pending:
        print(f"note: {report.pending} clips are not indexed yet and are left out: run "
              f"`python -m core index` to add them", file=sys.stderr)


def _classify(ws, embedder, args) -> None:
    from core.pipeline import search
    if args.clip is None and not args.audio:
        raise SystemExit("--labels classifies a clip: give --clip ID or --audio FILE")
    result = search.classify(ws, embedder, args.labels, clip_id=args.clip, source=args.audio,
                             templates=args.template, scale=args.scale)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        for label, prob in result.ranked():
            print(f"{prob:7.1%}  {'#' * round(prob * 40):40}  {label}")


def _search(ws, embedder, args):
    from core.pipeline import search
    if args.hybrid is None:
        args.hybrid = ws.settings.fusion_weight
    common = dict(k=args.k, offset=args.offset, filters=_filters(args))
    if args.audio:
        page = search.search_audio(ws, embedder, args.audio, **common)
    elif args.clip is not None:
        page = search.more_like_this(ws, embedder, args.clip, hybrid_weight=args.hybrid,
                                     with_caption_scores=True, **common)
    elif args.query.strip():
        page = search.search_text(ws, embedder, args.query, hybrid_weight=args.hybrid,
                                  with_caption_scores=True, **common)
    else:
        raise SystemExit("give a QUERY, --audio FILE or --clip ID")
    return page


def _print_page(page, args) -> None:
    for rank, hit in enumerate(page.hits, start=args.offset + 1):
        cap = "" if hit.caption_score is None else f" caption {hit.caption_score:.3f}"
        print(f"{rank:3}. clip {hit.clip_id:<6} score {hit.score:.3f} (model {hit.model_score:.3f}{cap})  "
              f"{hit.name} [{hit.start:.1f}–{hit.end:.1f} s] {hit.status}"
              + (f" label={hit.meta['label']}" if "label" in hit.meta else ""))
        if hit.caption:
            print(f"      {hit.caption}" + (f"  #{' #'.join(hit.tags)}" if hit.tags else ""))
    if not page.hits:
        print("no matches")
    elif page.has_more:
        print(f"… more: --offset {args.offset + args.k}")
