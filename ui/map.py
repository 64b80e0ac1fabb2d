"""Map tab: the embedding space as a UMAP scatter you can colour, listen to and send back to review.

Every event calls one function of core.pipeline.projection; this module only wires them to widgets.
gr.Plot has no click events, so HEAD (added to the page's <head> by app.head_html) bridges Plotly's own
click and box/lasso selection events to a hidden textbox whose change event plays the clip. The visible
points are also listed in a table (the fallback): selecting a row plays that clip.
Visitors (core/auth/published.py) see published captions only, no review status, and cannot send clips to review.
"""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from core.pipeline import projection

from core.auth import published
from ui.state import AppState

METRICS = ["cosine", "euclidean", "correlation", "manhattan"]
TABLE_LIMIT = 500
SELECTION_LISTED = 8          # captions of a box/lasso selection shown under the player

# Plotly's click / selection on #map-plot → "<clip ids>@<nonce>" in the hidden #map-picked box → pick().
HEAD = """
<script>
(() => {
  if (window.hearsayMapBridge) return;
  window.hearsayMapBridge = true;
  // customdata[0] of every map point is its clip id (core/pipeline/map_plots._hover)
  const clipIds = (ev) => [...new Set(((ev && ev.points) || [])
      .map((p) => p.customdata && p.customdata[0]).filter((v) => v != null).map(String))];
  function send(ids) {
    const box = document.querySelector('#map-picked textarea, #map-picked input');
    if (!box || !ids.length) return;
    box.value = ids.join(',') + '@' + Date.now();      // the nonce: clicking the same point again still plays
    // the DOM input event updates Gradio's value, which fires the box's change event (Gradio's own
    // "input" event only follows key presses)
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }
  // Gradio redraws the plot on each update and Plotly then drops its listeners (and makes a new plot.on):
  // bind again whenever the plot's `on` is not the one we bound.
  function bind() {
    const plot = document.querySelector('#map-plot .js-plotly-plot');
    if (!plot || !plot.on || plot.hearsayOn === plot.on) return;
    plot.hearsayOn = plot.on;
    plot.on('plotly_click', (ev) => send(clipIds(ev)));
    plot.on('plotly_selected', (ev) => send(clipIds(ev)));
  }
  new MutationObserver(bind).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""


def picked_ids(text: str | None) -> list[int]:
    """The clip ids the page's bridge wrote ("12,15@1733…"), in order, without repeats."""
    ids = []
    for part in (text or "").split("@")[0].split(","):
        part = part.strip()
        if part.lstrip("-").isdigit() and int(part) not in ids:
            ids.append(int(part))
    return ids


def _model_choices(state: AppState) -> list[str]:
    return projection.model_choices(state.ws)


def make_params(dims_, include_text_, n_neighbors_, min_dist_, metric_, seed_, max_points_) -> projection.ProjectionParams:
    return projection.ProjectionParams(
        dims=int(dims_), include_text=bool(include_text_), n_neighbors=int(n_neighbors_),
        min_dist=float(min_dist_), metric=metric_ or "cosine",
        seed=None if seed_ in (None, "") else int(seed_),
        max_points=int(max_points_ or projection.DEFAULT_MAX_POINTS))


class MapEvents:
    """The Map tab's event handlers: the values the page sends in, what it shows out. The drawn
    projection.MapData of a session comes in (and goes out) as `data`.
    Explicit parameters: Gradio only fills in gr.Progress when it is not behind *args."""

    def __init__(self, state: AppState):
        self.state, self.ws = state, state.ws

    def is_public(self, request) -> bool:
        """Whether this request gets the visitors' map (published captions, no review status)."""
        return not published.reads_private(self.state.role(request))

    def show_editor_row(self, request: gr.Request):
        """Editors only: visitors never see a button the server would refuse."""
        return gr.update(visible=not self.is_public(request))

    def draw(self, model_, color_, highlight_, z_, dims_, include_text_, n_neighbors_, min_dist_, metric_, seed_,
             max_points_, request: gr.Request = None, progress=gr.Progress()):
        params = make_params(dims_, include_text_, n_neighbors_, min_dist_, metric_, seed_, max_points_)
        try:
            data = projection.build_map(self.ws, model_ or "active", params, outlier_z=float(z_),
                                        progress=lambda f, m: progress(f, desc=f"Drawing the map: {m}"),
                                        public=self.is_public(request))
        except (ValueError, KeyError) as exc:
            raise gr.Error(str(exc)) from exc
        chosen = color_ if color_ in data.fields else data.default_color()
        return (data, projection.figure(data, chosen, highlight_outliers=highlight_),
                f"**{data.note}**", gr.update(choices=data.fields, value=chosen),
                projection.points_table(data, chosen, limit=TABLE_LIMIT))

    def recolor(self, data, color_, highlight_, query_, outliers_only_):
        if data is None or not color_:
            return gr.skip(), gr.skip()
        try:
            return (projection.figure(data, color_, highlight_outliers=highlight_),
                    projection.points_table(data, color_, query_, outliers_only_, TABLE_LIMIT))
        except KeyError as exc:
            raise gr.Error(str(exc).strip("'\"")) from exc

    def filter_points(self, data, color_, query_, outliers_only_):
        if data is None or not color_:
            return gr.skip()
        try:
            return projection.points_table(data, color_, query_, outliers_only_, TABLE_LIMIT)
        except KeyError as exc:
            raise gr.Error(str(exc).strip("'\"")) from exc

    def play(self, data, clip_id_):
        if not clip_id_:
            return None, ""
        cid = int(clip_id_)
        try:
            path = str(self.ws.clip_wav_path(cid))
        except KeyError as exc:
            raise gr.Error(f"No clip {cid}") from exc
        return path, _describe(data, cid)

    def pick(self, data, picked_, color_):
        """A click or box/lasso selection on the plot: play the first clip, list the selection."""
        ids = picked_ids(picked_)
        if not ids:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        path, info = self.play(data, ids[0])
        if len(ids) == 1 or data is None:
            return ids[0], path, info, "", gr.skip()
        listed = projection.points_table(data, color_ if color_ in data.fields else data.default_color(),
                                         clip_ids=ids, limit=TABLE_LIMIT)
        lines = [f"- clip {r.clip}: {r.caption or '*no caption*'}" for r in listed.head(SELECTION_LISTED).itertuples()]
        more = f"\n\n…and {len(ids) - SELECTION_LISTED} more in the table" if len(ids) > SELECTION_LISTED else ""
        return (ids[0], path, info, f"**{len(ids)} clips selected** (playing the first; the table lists them):\n"
                + "\n".join(lines) + more, listed)

    def select_row(self, data, evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            return gr.skip(), gr.skip(), gr.skip()
        cid = int(row[0])
        path, info = self.play(data, cid)
        return cid, path, info

    def send_clip(self, data, clip_id_, color_, query_, outliers_only_, request: gr.Request):
        if not clip_id_:
            raise gr.Error("Pick a clip first (select a row, or type its id).")
        report = projection.send_to_review(self.ws, [int(clip_id_)], annotator=_user(request),
                                           reason="map: sent back to review")
        if report.missing:
            raise gr.Error(f"No clip {int(clip_id_)}")
        return _after_send(data, report, color_, query_, outliers_only_)

    def send_all_outliers(self, data, color_, query_, outliers_only_, request: gr.Request):
        if data is None:
            raise gr.Error("Draw the map first.")
        ids = data.points.loc[data.points["outlier"], "clip_id"].astype(int).tolist()
        report = projection.send_to_review(self.ws, ids, annotator=_user(request),
                                           reason="map: caption far from its audio (outlier)")
        return _after_send(data, report, color_, query_, outliers_only_)

    def compare(self, model_a_, model_b_, color_, highlight_, z_, dims_, include_text_, n_neighbors_, min_dist_,
                metric_, seed_, max_points_, request: gr.Request = None, progress=gr.Progress()):
        params = make_params(dims_, include_text_, n_neighbors_, min_dist_, metric_, seed_, max_points_)
        try:
            a, b = projection.compare_maps(self.ws, model_a_ or "active", model_b_ or "active", params,
                                           outlier_z=float(z_), public=self.is_public(request),
                                           progress=lambda f, m: progress(f, desc=f"Comparing: {m}"))
            fig = projection.compare_figure(a, b, color_ if color_ in a.fields else a.default_color(),
                                            highlight_outliers=highlight_)
        except (ValueError, KeyError) as exc:
            raise gr.Error(str(exc)) from exc
        return fig, f"**Before** {a.note}  \n**After** {b.note}"

    def refresh_models(self, model_, a_, b_):
        choices = _model_choices(self.state)
        return (gr.update(choices=choices, value=model_), gr.update(choices=choices, value=a_),
                gr.update(choices=choices, value=b_))

    def on_open(self, data, model_, color_, highlight_, z_, a_, b_, dims_, include_text_, n_neighbors_, min_dist_,
                metric_, seed_, max_points_, request: gr.Request = None, progress=gr.Progress()):
        """First visit to the tab: draw the active model's map (cached after the first time)."""
        updates = self.refresh_models(model_, a_, b_)
        if data is not None:
            return (gr.skip(),) * 5 + updates
        try:
            return self.draw(model_, color_, highlight_, z_, dims_, include_text_, n_neighbors_, min_dist_, metric_,
                             seed_, max_points_, request=request, progress=progress) + updates
        except gr.Error as exc:   # e.g. nothing embedded yet: say so instead of a red toast
            return (None, None, f"*{exc.message}*", gr.skip(), gr.skip()) + updates


def _after_send(data, report, color_, query_, outliers_only_):
    if data is not None:   # keep the table honest without redrawing the map
        changed = data.points["clip_id"].isin(report.sent)
        data.points.loc[changed, "status"] = "pending"
        table_value = projection.points_table(data, color_, query_, outliers_only_, TABLE_LIMIT)
    else:
        table_value = gr.skip()
    return data, f"**{report.summary()}**", table_value


# -- the tab: layout in sections (each adds its components to `c`), then the wiring ------------------

def _controls(c: SimpleNamespace, state: AppState) -> None:
    defaults = projection.ProjectionParams()
    with gr.Row():
        c.model = gr.Dropdown(_model_choices(state), value="active", label="Model", allow_custom_value=True, scale=2)
        # empty until drawn: the first map picks the best field (label when the clips have one);
        # metadata columns join the choices then
        c.color = gr.Dropdown([f for f in projection.BUILTIN_FIELDS if f != "status"], value=None, label="Colour by",
                              scale=2, allow_custom_value=True)
        c.dims = gr.Radio([("2D", 2), ("3D", 3)], value=2, label="Dimensions", scale=1)
        c.include_text = gr.Checkbox(False, label="Show caption points (text embeddings)", scale=1)
        c.highlight = gr.Checkbox(True, label="Highlight caption outliers", scale=1)
    with gr.Accordion("UMAP and outlier settings", open=False):
        with gr.Row():
            c.n_neighbors = gr.Slider(2, 100, value=defaults.n_neighbors, step=1, label="n_neighbors")
            c.min_dist = gr.Slider(0.0, 1.0, value=defaults.min_dist, step=0.01, label="min_dist")
            c.metric = gr.Dropdown(METRICS, value=defaults.metric, label="metric")
            c.seed = gr.Number(defaults.seed, precision=0, label="seed (empty: faster, not reproducible)")
            c.max_points = gr.Number(defaults.max_points, precision=0, label="max points (above: random sample)")
            c.outlier_z = gr.Slider(1.0, 6.0, value=2.5, step=0.1, label="outlier threshold (robust z)")
    with gr.Row():
        c.draw_btn = gr.Button("Draw map", variant="primary")
        c.stop_btn = gr.Button("Stop", variant="stop")


def _map_view(c: SimpleNamespace) -> None:
    c.note = gr.Markdown()
    c.plot = gr.Plot(label="Embedding map", elem_id="map-plot")
    c.picked = gr.Textbox(visible="hidden", elem_id="map-picked")   # written by HEAD's bridge, never by hand
    # what a click plays sits right under the map (the table below is the fallback)
    with gr.Row():
        c.clip_id = gr.Number(None, precision=0, label="Clip id (Enter to play)", scale=1, elem_id="map-clip-id",
                              placeholder="click a dot, or type an id")
        c.player = gr.Audio(label="Clip", type="filepath", interactive=False, scale=3, elem_id="map-player")
    c.clip_info = gr.Markdown(elem_id="map-clip-info")
    c.selection = gr.Markdown()
    with gr.Row():
        c.query = gr.Textbox(label="Filter the list (caption, tags, file, colour value)", scale=3)
        c.outliers_only = gr.Checkbox(False, label="Outliers only", scale=1)
    c.table = gr.Dataframe(label="Visible points — select a row to listen", interactive=False, wrap=True,
                           max_height=360,
                           column_widths=["60px", "130px", "34%", "18%", "80px", "80px", "70px", "16%"])
    with gr.Row(visible=False) as c.editor_row:          # shown on load to those who may review
        c.send_one = gr.Button("Send this clip to review")
        c.send_outliers = gr.Button("Send all outliers to review")
    c.sent_note = gr.Markdown()


def _compare_section(c: SimpleNamespace, state: AppState) -> None:
    with gr.Accordion("Before / after: two models on the same clips", open=False):
        with gr.Row():
            c.model_a = gr.Dropdown(_model_choices(state), value="active", label="Before", allow_custom_value=True)
            c.model_b = gr.Dropdown(_model_choices(state), value="active", label="After", allow_custom_value=True)
            c.compare_btn = gr.Button("Compare", variant="primary")
        c.compare_note = gr.Markdown()
        c.compare_plot = gr.Plot(label="Before / after")


def build(state: AppState) -> None:
    gr.Markdown("Each dot is a clip, placed by the model's audio embedding (UMAP). **Click a dot to listen**, or "
                "box/lasso-select dots (plot toolbar) to list them; the table below lists the points too. Editors "
                "can send clips whose caption sits far from their sound (outliers) back to review.")
    c = SimpleNamespace(current=gr.State(None))          # the drawn projection.MapData of this session
    _controls(c, state)
    _map_view(c)
    _compare_section(c, state)
    _wire(c, MapEvents(state))


def _wire(c: SimpleNamespace, ev: MapEvents) -> None:
    params_inputs = [c.dims, c.include_text, c.n_neighbors, c.min_dist, c.metric, c.seed, c.max_points]
    listing = [c.current, c.color, c.query, c.outliers_only]
    draw_event = c.draw_btn.click(ev.draw, [c.model, c.color, c.highlight, c.outlier_z, *params_inputs],
                                  [c.current, c.plot, c.note, c.color, c.table], api_name="map_draw",
                                  show_progress_on=[c.plot])
    c.stop_btn.click(None, None, None, cancels=[draw_event], api_name="map_stop")
    gr.on([c.color.input, c.highlight.input], ev.recolor, [c.current, c.color, c.highlight, c.query, c.outliers_only],
          [c.plot, c.table], api_name="map_recolor")
    gr.on([c.query.submit, c.outliers_only.input], ev.filter_points, listing, [c.table], api_name="map_filter")
    c.picked.change(ev.pick, [c.current, c.picked, c.color], [c.clip_id, c.player, c.clip_info, c.selection, c.table],
                    api_name="map_pick", show_progress="hidden")
    c.table.select(ev.select_row, [c.current], [c.clip_id, c.player, c.clip_info], api_name="map_select_row")
    c.clip_id.submit(ev.play, [c.current, c.clip_id], [c.player, c.clip_info], api_name="map_play")
    c.send_one.click(ev.send_clip, [c.current, c.clip_id, c.color, c.query, c.outliers_only],
                     [c.current, c.sent_note, c.table], api_name="map_send_to_review")
    c.send_outliers.click(ev.send_all_outliers, listing, [c.current, c.sent_note, c.table],
                          api_name="map_send_outliers")
    c.compare_btn.click(ev.compare, [c.model_a, c.model_b, c.color, c.highlight, c.outlier_z, *params_inputs],
                        [c.compare_plot, c.compare_note], api_name="map_compare", show_progress_on=[c.compare_plot])
    root = gr.context.Context.root_block
    if root is not None:     # editors only: visitors never see a button the server would refuse
        root.load(ev.show_editor_row, None, [c.editor_row], api_name=False)

    # First visit to the tab draws the active model's map (cached after the first time).
    tab = gr.context.get_render_context()
    if isinstance(tab, gr.Tab):
        tab.select(ev.on_open, [c.current, c.model, c.color, c.highlight, c.outlier_z, c.model_a, c.model_b,
                                *params_inputs],
                   [c.current, c.plot, c.note, c.color, c.table, c.model, c.model_a, c.model_b], api_name="map_open",
                   show_progress_on=[c.plot])


def _describe(data, clip_id: int) -> str:
    if data is None:
        return f"clip {clip_id}"
    row = data.points[data.points["clip_id"] == clip_id]
    if row.empty:
        return f"clip {clip_id} (not on the map)"
    r = row.iloc[0]
    distance = "" if pd.isna(r["caption_distance"]) else f" · caption distance {r['caption_distance']:.3f}"
    flag = " · **outlier**" if r["outlier"] else ""
    status = f" · status {r['status']}" if "status" in r else ""      # a visitor's map has none
    return (f"**{r['caption'] or 'no caption'}**  \n{r['tags'] or 'no tags'}{status} · "
            f"{r['name']} {r['start']:.1f}–{r['end']:.1f} s{distance}{flag}")


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) or None

