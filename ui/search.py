"""Search tab: text → clips, audio (upload or microphone) → clips, more like a clip, zero-shot labels.

Each event calls one function of core/pipeline/search.py (after core/pipeline/index.py has caught the index up
with the catalogue); the handlers are the methods of `SearchEvents`, and ui/search_cards.py turns the
results into players, text and a chart.

Who may use which model (checked here, on the server, whatever the model box sends): anyone may
search the listed models ("active", "shipped", registered ids); only admins may type a checkpoint
folder. A visitor's search never starts an index for a model that has none yet (except the active
model, which an admin chose for everyone), so browsing cannot make the server write or work for long.

Result players are plain HTML <audio> elements pointing at the app's /audio/<content key>.wav route
(ui/api.py), which makes a clip's WAV on its first play: a gr.Audio output runs ffprobe on every file
it is given (10 processes per search), and making ten WAVs per search would cost more than the search.
A search never waits for an index sync of a filled index: it runs behind (core/index.catch_up).
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr
from gradio.context import LocalContext

from core.auth import access, published

from core.models import registry
from core.pipeline import index, search, search_view
from core.store.catalog import REVIEW_STATUSES
from ui import search_cards as cards
from ui.jobs import SessionJobs
from ui.progress import reporter
from ui.search_cards import HEAD  # noqa: F401  (app.py reads each tab's HEAD)
from ui.state import AppState

PAGE_SIZE = 10
AUTO_INDEX = 500            # a search embeds new clips itself when there are at most this many; more need "Update index"
ACTIVE = "active"

INDEXING = SessionJobs()        # index syncs check their session's cancel flag between batches


def model_choices(state: AppState) -> list[str]:
    return registry.choices(state.ws, ACTIVE)


def caller_role() -> str:
    """The role of whoever called the current event, under the app's access policy (ui/guard.py)."""
    policy = getattr(LocalContext.blocks.get(None), "hearsay_policy", None)
    if policy is None:                  # not built by app.build_app: assume the weakest role
        return access.VISITOR
    return policy.role_of(LocalContext.request.get(None))


def _is_active(state: AppState, embedder) -> bool:
    try:
        return embedder.model_id == index.resolve_embedder(state.ws, ACTIVE).model_id
    except index.IndexUnavailable:
        return False


def embedder_for(state: AppState, model: str | None, role: str, *, searching: bool = True):
    """The model to use, if this role may use it; `searching`: the call may go on to index it."""
    try:
        embedder = index.resolve_embedder(state.ws, model or ACTIVE,
                                          allow_folders=access.allows(role, access.ADMIN))
        if (searching and not access.allows(role, access.ANNOTATOR) and not index.has_collection(state.ws, embedder)
                and not _is_active(state, embedder)):
            raise gr.Error(f"This model ({embedder.model_id}) isn't indexed yet; an editor can index it "
                           "with **Update index**. Pick another model meanwhile.")
        return embedder
    except index.IndexUnavailable as exc:
        raise gr.Error(str(exc).strip("'\""))


def _given(value) -> bool:
    # Empty number boxes arrive as None (or 0 from some clients); ids start at 1, and a maximum
    # or window end of 0 s would match nothing, so 0 means "not set" for those.
    return value not in (None, "", 0)


def filters_from(status, sources, tags, min_d, max_d, recording, w_start, w_end, *, private: bool = True
                 ) -> search.Filters:
    """The search filters; `private` False (a visitor): the review-status filter is ignored, as it
    would tell which clips were rejected."""
    def num(v, zero_is_unset=False):
        return None if v in (None, "") or (zero_is_unset and v == 0) else float(v)
    return search.Filters(status=(status or ()) if private else (), source=sources or (), tags=tags or (),
                          min_duration=num(min_d), max_duration=num(max_d, True),
                          recording_id=int(recording) if _given(recording) else None,
                          window_start=num(w_start), window_end=num(w_end, True))


INTRO = ("Describe a sound in words, or search with a recording of one: the closest clips come first, "
         "and matches under the relevance floor are marked *weak*.")
EXAMPLES = 6                  # example-query chips under the search box
POLL_SECONDS = 2.0            # the index status line, while the index is filling


class SearchEvents:
    """The Search tab's event handlers: the values the page sends in, what it shows out. A results
    page fills `page_outputs` (see `build`): JSON, summary, query, ids, then (group, card, details)
    per slot, then the clip id box."""

    def __init__(self, state: AppState):
        self.state, self.ws = state, state.ws

    def catch_up(self, embedder, progress) -> str:
        """Index what changed since the last search (new clips only when few) before answering."""
        report = index.catch_up(self.ws, embedder, max_new=AUTO_INDEX, progress=reporter(progress), wait=False)
        if report is None:
            return ""
        if report.pending:
            return f"{report.pending} clips are not indexed yet: press **Update index**."
        if report.deferred:
            return "The index is catching up with recent changes; results may lag a few seconds."
        return ""

    def run(self, q: dict, model_v, hybrid_v, filters: tuple, progress) -> list:
        ws = self.ws
        role = caller_role()
        private = published.reads_private(role)
        embedder = embedder_for(self.state, model_v, role)
        common = dict(k=PAGE_SIZE, offset=int(q.get("offset", 0)), filters=filters_from(*filters, private=private))
        try:
            notice = self.catch_up(embedder, progress)
            if q["kind"] == "text":
                page = search.search_text(ws, embedder, q["query"], hybrid_weight=hybrid_v or 0.0,
                                          with_caption_scores=True, **common)
            elif q["kind"] == "audio":
                page = search.search_audio(ws, embedder, q["audio"], **common)
            else:
                page = search.more_like_this(ws, embedder, q["clip_id"], hybrid_weight=hybrid_v or 0.0,
                                             with_caption_scores=True, **common)
        except (ValueError, KeyError, index.IndexUnavailable) as exc:
            raise gr.Error(str(exc).strip("'\""))
        page.notice = notice
        return self.render(page, q, private)

    def render(self, page: search.SearchPage, q: dict, private: bool) -> list:
        first = page.offset + 1
        what = {"text": f"“{q.get('query', '')}”", "audio": "your sound", "clip": f"clip {q.get('clip_id')}"}[q["kind"]]
        line = cards.summary_line(page, what)
        if page.notice:
            line += f"  \n⚠ {page.notice}"
        out = [cards.public_page(page, private), line, q, [h.clip_id for h in page.hits]]
        for i in range(PAGE_SIZE):
            if i < len(page.hits):
                hit = page.hits[i]
                out += [gr.update(visible=True), cards.card_html(first + i, hit, cards.player_url(self.ws, hit)),
                        cards.hit_markdown(first + i, hit, private=private)]
            else:
                out += [gr.update(visible=False), "", ""]
        return out + [q["clip_id"] if q["kind"] == "clip" else gr.update()]

    # -- the searches -----------------------------------------------------------------------------
    def text_search(self, query_v: str, model_v, hybrid_v, filters, progress) -> list:
        if not (query_v or "").strip():
            raise gr.Error("Type a description of the sound you are looking for.")
        return self.run({"kind": "text", "query": query_v.strip(), "offset": 0}, model_v, hybrid_v, filters,
                        progress)

    def do_text(self, model_v, query_v, hybrid_v, *filters, progress=gr.Progress()):
        return self.text_search(query_v, model_v, hybrid_v, filters, progress)

    def do_example(self, sample, model_v, hybrid_v, *filters, progress=gr.Progress()):
        """A chip: its words go into the query box and are searched."""
        query_v = (sample or [""])[0] if isinstance(sample, (list, tuple)) else str(sample or "")
        return [query_v] + self.text_search(query_v, model_v, hybrid_v, filters, progress)

    def do_audio(self, model_v, sound_v, *filters, progress=gr.Progress()):
        if not sound_v:
            raise gr.Error("Upload or record a sound first.")
        return self.run({"kind": "audio", "audio": sound_v, "offset": 0}, model_v, 0.0, filters, progress)

    def do_like(self, model_v, clip_v, hybrid_v, *filters, progress=gr.Progress()):
        if not _given(clip_v):
            raise gr.Error("Give a clip id (or use a result's “More like this”).")
        return self.run({"kind": "clip", "clip_id": int(clip_v), "offset": 0}, model_v, hybrid_v, filters, progress)

    def _turn(self, delta: int, q, model_v, hybrid_v, filters, progress):
        if not q:
            raise gr.Error("Search for something first.")
        q = {**q, "offset": max(0, int(q.get("offset", 0)) + delta)}
        return self.run(q, model_v, hybrid_v, filters, progress)

    def prev_page(self, q, model_v, hybrid_v, *filters, progress=gr.Progress()):
        return self._turn(-PAGE_SIZE, q, model_v, hybrid_v, filters, progress)

    def next_page(self, q, model_v, hybrid_v, *filters, progress=gr.Progress()):
        return self._turn(PAGE_SIZE, q, model_v, hybrid_v, filters, progress)

    def slot_like(self, i: int):
        """The handler of result slot `i`'s "More like this" button."""
        def go(ids, model_v, hybrid_v, *filters, progress=gr.Progress()):
            if i >= len(ids or []):
                raise gr.Error("No result in this place.")
            return self.run({"kind": "clip", "clip_id": int(ids[i]), "offset": 0}, model_v, hybrid_v, filters,
                            progress)
        return go

    def do_classify(self, model_v, labels_v, templates_v, clip_v, sound_v):
        embedder = embedder_for(self.state, model_v, caller_role())
        use_clip = _given(clip_v)
        if not use_clip and not sound_v:
            raise gr.Error("Give a clip id or a sound to classify.")
        try:
            result = search.classify(self.ws, embedder, labels_v or "", templates=templates_v,
                                     clip_id=int(clip_v) if use_clip else None,
                                     source=None if use_clip else sound_v)
        except (ValueError, KeyError, index.IndexUnavailable) as exc:
            raise gr.Error(str(exc).strip("'\""))
        return cards.probability_chart(result), result.to_dict()

    # -- the index --------------------------------------------------------------------------------
    def do_status(self, model_v):
        embedder = embedder_for(self.state, model_v, caller_role(), searching=False)
        try:
            return cards.status_markdown(index.status(self.ws, embedder))
        except index.IndexUnavailable as exc:
            raise gr.Error(str(exc))

    def _index(self, rebuild: bool, model_v, request, progress):
        embedder = embedder_for(self.state, model_v, caller_role())
        with INDEXING.running(request) as flag:
            try:
                report = index.sync(self.ws, embedder, rebuild=rebuild, cancel=flag, progress=reporter(progress))
                gr.Info(report.summary())
                return cards.status_markdown(index.status(self.ws, embedder))
            except index.IndexUnavailable as exc:
                raise gr.Error(str(exc))

    def update_index(self, model_v, request: gr.Request, progress=gr.Progress()):
        return self._index(False, model_v, request, progress)

    def rebuild_index(self, model_v, request: gr.Request, progress=gr.Progress()):
        return self._index(True, model_v, request, progress)

    def do_cancel(self, request: gr.Request):
        INDEXING.cancel(request)
        return "Cancelling after the current batch…"

    def tick(self, model_v, seen_v):
        """The status line while the index fills (the app indexes the active model at launch); the
        polling stops once the index covers the catalogue."""
        state = self.state
        launching = (cards.launch_line(getattr(state, "launch_index", None)) if model_v in (None, "", ACTIVE)
                     else None)
        if launching:
            return launching, gr.Timer(active=True), {}
        try:
            info = index.status(self.ws, embedder_for(state, model_v, caller_role(), searching=False))
        except (gr.Error, index.IndexUnavailable) as exc:
            return f"Search is not ready: {exc}", gr.Timer(active=False), {}
        line, seen_v, polling = cards.index_line(info, seen_v, time.monotonic())
        return line, gr.Timer(active=polling), seen_v

    def after_search(self, model_v, seen_v, page_v):
        """After a search: the status line (its catch-up may have filled the index), the page buttons
        that lead somewhere, and no more introduction."""
        page_v = page_v or {}
        return (*self.tick(model_v, seen_v), gr.update(visible=int(page_v.get("offset") or 0) > 0),
                gr.update(visible=bool(page_v.get("has_more"))), gr.update(visible=False))

    def on_load(self, model_v, request: gr.Request):
        """What this visitor may use (review statuses and index writes only for the team), the
        models and example queries as they are now, and the index status line (then the number
        boxes, sent empty: Gradio draws None as 0)."""
        state = self.state
        role = state.role(request)
        team, admin = published.reads_private(role), access.allows(role, access.ADMIN)
        line, timer, seen_v = self.tick(model_v, {})
        return (gr.update(visible=team), gr.update(visible=team), gr.update(visible=admin),
                gr.update(visible=team), gr.update(choices=model_choices(state)),
                gr.Dataset(samples=[[q] for q in search_view.example_queries(self.ws, EXAMPLES)]),
                line, timer, seen_v, *[None] * len(NUMBER_BOXES))


# -- the tab: layout in sections (each adds its components to `c`), then the wiring ------------------
# Sent empty on page load: Gradio draws a None number box as 0.
NUMBER_BOXES = ("clip_id", "f_min", "f_max", "f_rec", "f_w0", "f_w1")
FILTERS = ("f_status", "f_source", "f_tags", "f_min", "f_max", "f_rec", "f_w0", "f_w1")


def _results(c: SimpleNamespace, ws) -> None:
    with gr.Column(scale=3, min_width=300):
        with gr.Row(equal_height=True):
            c.query = gr.Textbox(show_label=False, placeholder="Describe a sound…",
                                 scale=5, min_width=200, container=False, elem_id="search-query",
                                 label="Describe a sound")
            c.text_btn = gr.Button("Search", variant="primary", scale=1, min_width=80, elem_id="search-go")
        c.examples = gr.Dataset(components=[c.query],
                                samples=[[q] for q in search_view.example_queries(ws, EXAMPLES)],
                                label="Try one of these", layout="gallery", samples_per_page=EXAMPLES,
                                elem_id="search-examples")
        c.intro = gr.Markdown(INTRO, elem_id="search-intro")
        c.summary = gr.Markdown("", elem_id="search-summary", min_height=48)   # room for the progress bar
        c.slots = []
        for i in range(PAGE_SIZE):
            with gr.Group(visible=False, elem_classes="hs-result") as group:
                player = gr.HTML(js_on_load=None, padding=False)
                with gr.Row(equal_height=True, elem_classes="hs-details-row"):
                    text = gr.Markdown(elem_classes="hs-details")
                    more = gr.Button("More like this", size="sm", scale=0, min_width=110)
            c.slots.append((group, player, text, more))
        with gr.Row():
            c.prev_btn = gr.Button("◀ Previous", size="sm", visible=False)
            c.next_btn = gr.Button("Next ▶", size="sm", visible=False)


def _filters(c: SimpleNamespace, facets: dict) -> None:
    with gr.Accordion("Filters", open=False):
        c.f_status = gr.CheckboxGroup(list(REVIEW_STATUSES), label="Review status", visible=False)
        c.f_source = gr.Dropdown(facets["sources"], multiselect=True, label="Source")
        c.f_tags = gr.Dropdown(facets["tags"], multiselect=True, allow_custom_value=True, label="Tags (any)")
        with gr.Row():
            c.f_min = gr.Number(label="Min duration (s)", value=None, minimum=0, placeholder="any")
            c.f_max = gr.Number(label="Max duration (s)", value=None, minimum=0, placeholder="any")
        c.f_rec = gr.Number(label="Recording id", value=None, precision=0, placeholder="any")
        with gr.Row():
            c.f_w0 = gr.Number(label="Window from (s)", value=None, minimum=0, placeholder="start")
            c.f_w1 = gr.Number(label="Window to (s)", value=None, minimum=0, placeholder="end")


def _advanced(c: SimpleNamespace, state: AppState, facets: dict) -> None:
    with gr.Accordion("Advanced: model, index, filters, caption weight, zero-shot labels", open=False):
        with gr.Row():
            c.model = gr.Dropdown(label="Model", choices=model_choices(state), value=ACTIVE,
                                  allow_custom_value=True, scale=2)
            c.check_btn = gr.Button("Check index", size="sm", scale=0)
            c.update_btn = gr.Button("Update index", size="sm", scale=0)
            c.rebuild_btn = gr.Button("Rebuild", size="sm", scale=0)
            c.cancel_btn = gr.Button("Cancel", size="sm", scale=0)
        c.hybrid = gr.Slider(0, 1, value=float(state.settings.fusion_weight), step=0.05,
                             label="Caption weight (hybrid: 0 = model only)")
        with gr.Row():
            c.clip_id = gr.Number(label="Clip id", value=None, precision=0, placeholder="none")
            c.like_btn = gr.Button("More like this clip")
        _filters(c, facets)
        with gr.Accordion("Zero-shot labels", open=False):
            c.labels = gr.Textbox(label="Labels (comma-separated)", placeholder="dog, cat, rain, engine")
            c.templates = gr.Textbox(label="Prompt templates (one per line, {label} marks the label)",
                                     value="\n".join(search.DEFAULT_TEMPLATES), lines=2)
            gr.Markdown("Classifies the clip id above, or else the sound you uploaded or recorded.")
            c.classify_btn = gr.Button("Classify")
            c.chart = gr.Plot(label="Probabilities")
            c.zero_json = gr.JSON(label="Zero-shot result", visible=False)
        with gr.Accordion("Results as JSON", open=False):
            c.results = gr.JSON(label="Results")


def build(state: AppState) -> None:
    c = SimpleNamespace(index_info=gr.Markdown("", elem_id="search-status", elem_classes="hs-status"))
    with gr.Row(equal_height=False):
        _results(c, state.ws)
        with gr.Column(scale=1, min_width=260):
            c.sound = gr.Audio(label="…or search with a sound", sources=["upload", "microphone"], type="filepath")
            c.audio_btn = gr.Button("Find similar sounds")
    _advanced(c, state, search.facets(state.ws))
    c.last_query = gr.State({})           # what the page buttons repeat
    c.shown_ids = gr.State([])            # clip ids of the slots, for their "more like this" buttons
    c.seen = gr.State({})                 # the index count the status line first saw, and when (its rate)
    c.poll = gr.Timer(POLL_SECONDS, active=False)
    _wire(c, SearchEvents(state))


def _wire(c: SimpleNamespace, ev: SearchEvents) -> None:
    filter_inputs = [getattr(c, name) for name in FILTERS]
    # the clip a "more like this" started from becomes the selected clip (ready for Classify)
    page_outputs = [c.results, c.summary, c.last_query, c.shown_ids] + [x for s in c.slots for x in s[:3]] + [c.clip_id]
    one_bar = dict(show_progress="full", show_progress_on=[c.summary])    # one progress bar, not one per card
    search_inputs = [c.model, c.query, c.hybrid] + filter_inputs
    paging_inputs = [c.last_query, c.model, c.hybrid] + filter_inputs
    after = dict(fn=ev.after_search, inputs=[c.model, c.seen, c.results],
                 outputs=[c.index_info, c.poll, c.seen, c.prev_btn, c.next_btn, c.intro],
                 api_name=False, show_progress="hidden")
    c.text_btn.click(ev.do_text, search_inputs, page_outputs, api_name="search_text", **one_bar).then(**after)
    c.query.submit(ev.do_text, search_inputs, page_outputs, api_name="search_text_submit",
                   api_visibility="undocumented", **one_bar).then(**after)
    c.examples.click(ev.do_example, [c.examples, c.model, c.hybrid] + filter_inputs, [c.query] + page_outputs,
                     api_name="search_example", api_visibility="undocumented", **one_bar).then(**after)
    c.audio_btn.click(ev.do_audio, [c.model, c.sound] + filter_inputs, page_outputs, api_name="search_sound",
                      **one_bar).then(**after)
    c.like_btn.click(ev.do_like, [c.model, c.clip_id, c.hybrid] + filter_inputs, page_outputs,
                     api_name="search_more_like_this", **one_bar).then(**after)
    c.prev_btn.click(ev.prev_page, paging_inputs, page_outputs, api_name="search_prev_page", **one_bar).then(**after)
    c.next_btn.click(ev.next_page, paging_inputs, page_outputs, api_name="search_next_page", **one_bar).then(**after)
    for i, (_, _, _, more) in enumerate(c.slots):
        more.click(ev.slot_like(i), [c.shown_ids, c.model, c.hybrid] + filter_inputs, page_outputs,
                   api_name=f"search_more_like_result_{i + 1}", api_visibility="undocumented",
                   **one_bar).then(**after)
    c.classify_btn.click(ev.do_classify, [c.model, c.labels, c.templates, c.clip_id, c.sound], [c.chart, c.zero_json],
                         api_name="search_classify", show_progress_on=[c.chart])
    c.check_btn.click(ev.do_status, [c.model], [c.index_info], api_name="search_index_status")
    c.model.change(ev.do_status, [c.model], [c.index_info], api_name="search_model_changed",
                   api_visibility="undocumented", show_progress="hidden")
    c.update_btn.click(ev.update_index, [c.model], [c.index_info], api_name="search_update_index", **one_bar)
    c.rebuild_btn.click(ev.rebuild_index, [c.model], [c.index_info], api_name="search_rebuild_index", **one_bar)
    c.cancel_btn.click(ev.do_cancel, None, [c.index_info], api_name="search_cancel_index")
    c.poll.tick(ev.tick, [c.model, c.seen], [c.index_info, c.poll, c.seen], api_name=False, show_progress="hidden")
    root = gr.context.Context.root_block
    if root is not None:
        root.load(ev.on_load, [c.model], [c.f_status, c.update_btn, c.rebuild_btn, c.cancel_btn, c.model, c.examples,
                                          c.index_info, c.poll, c.seen, *[getattr(c, n) for n in NUMBER_BOXES]],
                  api_name=False, show_progress="hidden")
