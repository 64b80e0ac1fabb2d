"""CLI: `project` — the Map tab's figure as a standalone HTML file.

    python -m core project --out map.html [--dims 2|3] [--color FIELD] [--model NAME] [--compare OTHER]
"""
from __future__ import annotations

from core.pipeline import projection
from core.cli.common import cancel_on_interrupt, command, workspace_from


def register(sub) -> None:
    p = command(sub, "project", func=cmd_project,
                help="UMAP map of the clip embeddings as a standalone HTML file",
                description="Project a model's clip embeddings with UMAP (2D or 3D), colour them and "
                            "write the same plotly figure the Map tab shows. Results are cached in the "
                            "workspace, so a second run with the same settings is instant.")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--model", default="active", help="model id (default: the active model)")
    p.add_argument("--compare", metavar="MODEL", help="a second model: before/after maps side by side")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2)
    p.add_argument("--color", help="colouring field: cluster, top_tag, status, source, caption_distance or a "
                                   "metadata column such as label (default: label, else top_tag, else source — the first "
                                   "with 2–20 values — else cluster)")
    p.add_argument("--n-neighbors", type=int, default=projection.ProjectionParams.n_neighbors)
    p.add_argument("--min-dist", type=float, default=projection.ProjectionParams.min_dist)
    p.add_argument("--metric", default=projection.ProjectionParams.metric)
    p.add_argument("--seed", type=int, default=projection.ProjectionParams.seed,
                   help="random seed; -1 for a faster, non-reproducible layout")
    p.add_argument("--max-points", type=int, default=projection.DEFAULT_MAX_POINTS,
                   help="project a random sample above this many clips")
    p.add_argument("--include-text", action="store_true", help="caption embeddings in the same projection")
    p.add_argument("--outlier-z", type=float, default=2.5, help="robust z above which a clip is a caption outlier")
    p.add_argument("--no-outliers", action="store_true", help="do not ring the caption outliers")
    p.add_argument("--list-outliers", action="store_true", help="also print the outlier clips")


def cmd_project(args) -> int:
    from tqdm import tqdm

    ws = workspace_from(args)
    params = projection.ProjectionParams(
        dims=args.dims, n_neighbors=args.n_neighbors, min_dist=args.min_dist, metric=args.metric,
        seed=None if args.seed is not None and args.seed < 0 else args.seed,
        include_text=args.include_text, max_points=args.max_points)
    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {postfix}")

    def progress(fraction: float, message: str) -> None:
        bar.n = int(round(100 * fraction))
        bar.set_postfix_str(message[-50:])
        bar.refresh()

    try:
        with cancel_on_interrupt(bar) as cancel:
            if args.compare:
                a, b = projection.compare_maps(ws, args.model, args.compare, params, outlier_z=args.outlier_z,
                                               progress=progress, cancel=cancel)
                color = _check_color(args.color, a)
                fig = projection.compare_figure(a, b, color, highlight_outliers=not args.no_outliers)
                maps = [a, b]
            else:
                a = projection.build_map(ws, args.model, params, outlier_z=args.outlier_z, progress=progress,
                                         cancel=cancel)
                color = _check_color(args.color, a)
                fig = projection.figure(a, color, highlight_outliers=not args.no_outliers)
                maps = [a]
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}")
        return 1
    path = projection.write_html(fig, args.out)
    for m in maps:
        seconds = m.projection.seconds
        print(f"{m.note} · {seconds:.1f} s")
        if args.list_outliers:
            for row in projection.points_table(m, color, outliers_only=True, limit=10_000).itertuples():
                print(f"  outlier clip {row.clip}  distance {row.distance:.3f}  {row.caption!r}")
    print(f"colour: {color} (fields: {', '.join(maps[0].fields)})")
    print(f"wrote {path}")
    return 0


def _check_color(color: str | None, data: projection.MapData) -> str:
    if color is None:
        return data.default_color()
    if color not in data.fields:
        raise KeyError(f"unknown colour field {color!r}; choose from {', '.join(data.fields)}")
    return color
