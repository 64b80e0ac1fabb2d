"""The map's plotly figures: one model's scatter (2D or 3D) or two side by side with one legend."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from core.pipeline.map_table import CONTINUOUS_FIELDS, NONE_VALUE, field_text

if TYPE_CHECKING:  # plotly loads only when a figure is drawn
    import plotly.graph_objects as go

    from core.pipeline.projection import MapData

MAX_CATEGORIES = 20                # colour legend: the most frequent values, the rest become "other"
OTHER_VALUE = "other"
_NOISE_COLOUR = "#b8b8b8"


def category_colours(values: Sequence[str]) -> dict[str, str]:
    """Value → colour, stable for the same values (so two maps side by side share a legend)."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3 + qualitative.Set2 + qualitative.Dark24
    counts = pd.Series(list(values)).value_counts()
    ordered = sorted(counts.index, key=lambda v: (v in (NONE_VALUE, OTHER_VALUE), -counts[v], v))
    colours, i = {}, 0
    for value in ordered:
        if value in (NONE_VALUE, OTHER_VALUE):
            colours[value] = _NOISE_COLOUR
        else:
            colours[value] = palette[i % len(palette)]
            i += 1
    return colours


def _categories(points: pd.DataFrame, color: str) -> pd.Series:
    """The colour field as at most MAX_CATEGORIES values (rarer ones become "other")."""
    values = points[color].astype(str).replace("", NONE_VALUE)
    top = [v for v in values.value_counts().index if v not in (NONE_VALUE, OTHER_VALUE)][:MAX_CATEGORIES]
    return values.where(values.isin(top + [NONE_VALUE]), OTHER_VALUE)


def _hover(points: pd.DataFrame, color: str) -> tuple[np.ndarray, str]:
    wrap = [("<br>".join(textwrap.wrap(c, 60)) if c else "<i>no caption</i>") for c in points["caption"]]
    # customdata[0] is the clip id: the page's click bridge (ui/map.py) reads it
    status = points["status"] if "status" in points else pd.Series("", index=points.index)
    custom = np.column_stack([points["clip_id"].astype(int), wrap, points["tags"].replace("", "—"),
                              status, field_text(points, color), points["name"]])
    status_line = "<br>status: %{customdata[3]}" if "status" in points else ""    # never on a visitor's map
    template = (f"<b>%{{customdata[1]}}</b><br>tags: %{{customdata[2]}}{status_line}"
                f"<br>{color}: %{{customdata[4]}}<br>clip %{{customdata[0]}} · %{{customdata[5]}}<extra></extra>")
    return custom, template


def _traces(data: MapData, color: str, highlight_outliers: bool, selected: int | None,
            colours: dict[str, str] | None, show_legend: bool) -> list:
    import plotly.graph_objects as go

    p = data.points
    three = data.dims == 3
    axes = ["x", "y", "z"] if three else ["x", "y"]
    many = len(p) > 5000 and not three
    Scatter = go.Scatter3d if three else (go.Scattergl if many else go.Scatter)
    size = 4 if three else (5 if many else 9)

    def xyz(frame: pd.DataFrame, prefix: str = "") -> dict:
        return {a: frame[prefix + a].to_numpy() for a in axes}

    traces = []
    has_text = f"text_{axes[0]}" in p
    if color in CONTINUOUS_FIELDS:
        custom, template = _hover(p, color)
        traces.append(Scatter(**xyz(p), mode="markers", name="clips", customdata=custom, hovertemplate=template,
                              showlegend=False,
                              marker=dict(size=size, color=p[color].to_numpy(), colorscale="Viridis",
                                          showscale=show_legend, colorbar=dict(title=color))))
    else:
        cats = _categories(p, color)
        colours = colours or category_colours(cats)
        for value in sorted(cats.unique(), key=lambda v: (v in (NONE_VALUE, OTHER_VALUE), -(cats == v).sum(), v)):
            part = p[cats == value]
            custom, template = _hover(part, color)
            traces.append(Scatter(**xyz(part), mode="markers", name=value, legendgroup=value, showlegend=show_legend,
                                  customdata=custom, hovertemplate=template,
                                  marker=dict(size=size, color=colours.get(value, _NOISE_COLOUR), opacity=0.85)))
            if has_text:
                captioned = part[part[f"text_{axes[0]}"].notna()]
                if len(captioned):
                    traces.append(Scatter(**xyz(captioned, "text_"), mode="markers", name=f"{value} (caption)",
                                          legendgroup=value, showlegend=False, customdata=_hover(captioned, color)[0],
                                          hovertemplate="caption of " + template,
                                          marker=dict(size=size, symbol="x",
                                                      color=colours.get(value, _NOISE_COLOUR), opacity=0.6)))
    if highlight_outliers and p["outlier"].any():
        out = p[p["outlier"]]
        custom, template = _hover(out, color)
        traces.append(Scatter(**xyz(out), mode="markers", name="caption outlier", legendgroup="outlier",
                              showlegend=show_legend, customdata=custom, hovertemplate="OUTLIER " + template,
                              marker=dict(size=size + 8, symbol="circle-open", color="#d62728",
                                          line=dict(width=2, color="#d62728"))))
    if selected is not None and (p["clip_id"] == int(selected)).any():
        sel = p[p["clip_id"] == int(selected)]
        custom, template = _hover(sel, color)
        traces.append(Scatter(**xyz(sel), mode="markers", name="selected", legendgroup="selected",
                              showlegend=show_legend, customdata=custom, hovertemplate=template,
                              marker=dict(size=size + 12, symbol="diamond-open" if three else "star-open",
                                          color="black", line=dict(width=2, color="black"))))
    return traces


def _layout(fig: "go.Figure", title: str, height: int) -> None:
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), height=height,
                      margin=dict(l=10, r=10, t=50, b=10),
                      # legend below the plot: on a phone a side legend takes half the map's width
                      legend=dict(itemsizing="constant", orientation="h", yanchor="top", y=-0.02, x=0),
                      template="plotly_white", hoverlabel=dict(align="left"))
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False)
    # UMAP axes have no units: hide their numbers in 3D too
    hidden = dict(showticklabels=False, title="")
    fig.update_scenes(xaxis=hidden, yaxis=hidden, zaxis=hidden)


def figure(data: MapData, color: str | None = None, *, highlight_outliers: bool = True, selected: int | None = None,
           height: int = 620) -> "go.Figure":
    """The map as a plotly scatter (2D or 3D), coloured by `color`, hover showing caption and tags."""
    import plotly.graph_objects as go

    color = color or data.default_color()
    if color not in data.points:
        raise KeyError(f"unknown colouring field {color!r}; choose from {data.fields}")
    fig = go.Figure(_traces(data, color, highlight_outliers, selected, None, True))
    legend = " · ● audio ✕ caption" if any(c.startswith("text_") for c in data.points) else ""
    _layout(fig, f"{data.note} · colour: {color}{legend}", height)
    return fig


def compare_figure(a: MapData, b: MapData, color: str | None = None, *, highlight_outliers: bool = True,
                   selected: int | None = None, height: int = 620) -> "go.Figure":
    """Two maps side by side with one legend and the same colours (before/after)."""
    from plotly.subplots import make_subplots

    color = color or a.default_color()
    for d in (a, b):
        if color not in d.points:
            raise KeyError(f"unknown colouring field {color!r}; choose from {d.fields}")
    spec = {"type": "scene"} if a.dims == 3 else {"type": "xy"}
    fig = make_subplots(rows=1, cols=2, specs=[[spec, spec]], horizontal_spacing=0.03,
                        subplot_titles=[a.note, b.note])
    colours = None
    if color not in CONTINUOUS_FIELDS:
        colours = category_colours(pd.concat([_categories(a.points, color), _categories(b.points, color)]))
    for col, d in ((1, a), (2, b)):
        for trace in _traces(d, color, highlight_outliers, selected, colours, show_legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
    _layout(fig, f"before / after · colour: {color}", height)
    return fig


def write_html(fig: "go.Figure", path: str | Path) -> Path:
    """A standalone HTML file (plotly.js inlined: opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
