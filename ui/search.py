"""Search tab: text → clips, audio (upload or microphone) → clips, more like a clip, zero-shot labels.

Each event calls one function of core/pipeline/search.py (after core/pipeline/index.py has caught the index up
with the catalogue); this module only turns the results into players, text and a chart.

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

import html
import re
import threading
import time
from pathlib import PurePosixPath
from urllib.parse import quote

import gradio as gr
from gradio.context import LocalContext

from core.auth import access, published

from core.models import registry
from core.pipeline import index, search, search_view
from core.store.catalog import REVIEW_STATUSES
from ui.progress import rate_and_eta, reporter
from ui.state import AppState

PAGE_SIZE = 10
AUTO_INDEX = 500            # a search embeds new clips itself when there are at most this many; more need "Update index"
ACTIVE = "active"

_cancel_flags: dict[str, threading.Event] = {}


def cancel_flag(request: gr.Request | None) -> threading.Event:
    key = getattr(request, "session_hash", None) or "cli"
    return _cancel_flags.setdefault(key, threading.Event())


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


AUDIO_ROUTE = "audio"        # ui/api.py serves clip WAVs at /audio/<content key>.wav (relative: works under a proxy path)


def player_url(ws, hit: search.Hit) -> str | None:
    """Where a result's player fetches its audio: the clip WAV by content key. A WAV not made yet is
    made by the route on the first play (`?clip=`), not for each of the ten results shown (a decode
    and a write each, ~10 ms, in the search). None when the clip is gone (deleted since indexing)."""
    if hit.audio_key:
        name = f"{hit.audio_key.replace(':', '_')}.wav"
        if (ws.cache_dir / "clips" / name).is_file():
            return f"{AUDIO_ROUTE}/{quote(name)}"
        try:
            ws.catalog.get_clip(hit.clip_id)
        except KeyError:
            return None
        return f"{AUDIO_ROUTE}/{quote(name)}?clip={hit.clip_id}"
    try:                                 # an index from before content keys: make it now
        return f"{AUDIO_ROUTE}/{quote(search.player_wav(ws, hit).name)}"
    except (KeyError, OSError):
        return None


def player_html(url: str | None) -> str:
    """A browser player for a clip WAV; it loads nothing until played."""
    if url is None:
        return "<div class='hs-player'>This clip's audio is gone.</div>"
    return (f"<audio class='hs-player' controls preload='none' style='width:100%' "
            f"src='{html.escape(url)}'></audio>")


def card_html(rank: int, hit: search.Hit, url: str | None) -> str:
    """A result's card: title and a score bar (greyed, with a "weak match" cue, under the floor) beside
    its player; they wrap onto two lines on a phone."""
    weak = search_view.is_weak(hit.score)
    title = search_view.clip_title(hit.name, hit.meta.get("label"), hit.clip_id)
    width = max(0.0, min(1.0, hit.score)) * 100
    badge = "<span class='hs-weak-badge'>weak match</span>" if weak else ""
    return (f"<div class='hs-card{' hs-weak' if weak else ''}'><div class='hs-card-info'>"
            f"<div class='hs-card-head'><span class='hs-rank'>{rank}</span>"
            f"<span class='hs-title'>{html.escape(title)}</span>{badge}</div>"
            f"<div class='hs-score' title='score {hit.score:.3f}'><div class='hs-bar'>"
            f"<span style='width:{width:.0f}%'></span></div><span class='hs-num'>{hit.score:.2f}</span></div>"
            f"</div>{player_html(url)}</div>")


def status_markdown(info: dict) -> str:
    state = "up to date" if info["current"] else "needs an update"
    return (f"Index for `{info['model_id']}`: **{info['indexed']}** of **{info['clips']}** clips · {state}")


def index_line(info: dict, seen: dict | None, now: float) -> tuple[str, dict, bool]:
    """The status line while the index fills, what the next poll compares to (the first count seen and
    when, for the rate; the last change, to stop polling an index nobody is filling), and whether to
    poll again."""
    indexed, clips = info["indexed"], info["clips"]
    if info["current"]:
        return f"✓ Search covers all **{clips}** clips.", {}, False
    if not seen or seen["indexed"] > indexed:
        seen = {"indexed": indexed, "at": now, "last": indexed, "changed": now}
    if indexed != seen["last"]:
        seen = {**seen, "last": indexed, "changed": now}
    polling = now - seen["changed"] < STALLED_SECONDS
    if indexed >= clips:
        if polling:
            return "The index is catching up with recent changes…", seen, True
        return "The index is a little behind recent changes; the next search brings it up to date.", seen, False
    if not polling:
        return (f"**{indexed}** of **{clips}** clips are indexed; the next search indexes the rest "
                "(or an editor's **Update index**)."), seen, False
    pace = rate_and_eta(indexed - seen["indexed"], clips - seen["indexed"], now - seen["at"])
    return (f"Indexing the library for search: **{indexed}** of **{clips}** clips{pace}. "
            "Searches answer from the clips indexed so far."), seen, True


def launch_line(job) -> str | None:
    """The status line while the app's own indexing on launch runs (ui/state.BackgroundJob), else None."""
    if job is None or not job.running:
        return None
    if not job.total:
        return "Preparing the search index…"
    pace = rate_and_eta(job.done, job.total, time.monotonic() - (job.started or time.monotonic()))
    return (f"Indexing the library for search: **{job.done}** of **{job.total}** clips{pace}. "
            "Searches answer from the clips indexed so far.")


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


def hit_markdown(rank: int, hit: search.Hit, *, private: bool = True) -> str:
    """The card's details: caption, tags, where the clip is from, the scores (and, for the team, its
    review status)."""
    lines = []
    if hit.caption:
        lines.append(f"“{hit.caption}”")
    if hit.tags:
        lines.append(" ".join(f"`{t}`" for t in hit.tags))
    scores = f"model {hit.model_score:.3f}" + ("" if hit.caption_score is None else
                                                f", caption {hit.caption_score:.3f}")
    file = PurePosixPath(hit.name.replace("\\", "/")).name
    file = re.sub(r"([\\`*_\[\]])", r"\\\1", html.escape(file))        # plain text that wraps on a phone
    where = f"#{rank} · clip {hit.clip_id} · {file} · {hit.start:.1f}–{hit.end:.1f} s · {scores}"
    lines.append(f"<small>{where}{' · ' + hit.status if private else ''}</small>")
    return "\n\n".join(lines)


def summary_line(page: search.SearchPage, what: str) -> str:
    if not page.hits:
        return f"No matches for {what}."
    first, last = page.offset + 1, page.offset + len(page.hits)
    line = f"Results {first}–{last} for {what} · {page.seconds * 1000:.0f} ms"
    strong = sum(not search_view.is_weak(h.score) for h in page.hits)
    floor = f"score under {search_view.WEAK_MATCH:.2f}"
    if strong == 0:
        line += f"  \n**No close match**: these are only the nearest sounds ({floor})."
    elif strong < len(page.hits):
        line += f" · {strong} close, {len(page.hits) - strong} weak ({floor})"
    return line


def public_page(page: search.SearchPage, private: bool) -> dict:
    """The results as JSON, each hit marked weak or not; visitors never see review statuses."""
    out = page.to_dict()
    out["weak_below"] = search_view.WEAK_MATCH
    for hit in out["hits"]:
        hit["weak"] = search_view.is_weak(hit["score"])
        if not private:
            hit.pop("status", None)
    return out


def probability_chart(result: search.ZeroShot):
    import plotly.graph_objects as go
    ranked = result.ranked()[::-1]                       # largest at the top of a horizontal bar chart
    fig = go.Figure(go.Bar(x=[p for _, p in ranked], y=[label for label, _ in ranked], orientation="h",
                           text=[f"{p:.1%}" for _, p in ranked], textposition="auto"))
    fig.update_layout(xaxis={"range": [0, 1], "tickformat": ".0%", "title": "probability"},
                      height=120 + 32 * len(ranked), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title=f"zero-shot (scale {result.scale:.1f})")
    return fig


INTRO = ("Describe a sound in words, or search with a recording of one: the closest clips come first, "
         "and matches under the relevance floor are marked *weak*.")
EXAMPLES = 6                  # example-query chips under the search box
POLL_SECONDS = 2.0            # the index status line, while the index is filling
STALLED_SECONDS = 20.0        # polling stops when the count has not moved for this long (nobody is indexing)

HEAD = """<style>
#search-query textarea, #search-query input { font-size: 1.15rem; padding: .7rem .9rem; }
#search-go { min-height: 3rem; }
#search-status [data-testid="status-tracker"] { display: none !important; }  /* polled quietly (Gradio 6 ignores show_progress="hidden") */
.hs-status, .hs-status p { font-size: .9rem; color: var(--body-text-color-subdued); }
.hs-card { display: flex; flex-wrap: wrap; align-items: center; gap: .3rem 1rem; padding: .5rem .75rem .1rem; }
.hs-card-info { flex: 1 1 220px; min-width: 0; }
.hs-card audio { flex: 1 1 260px; min-width: 0; height: 2.5rem; }
.hs-details-row { padding: 0 .75rem .3rem; align-items: center; }
.hs-details p { margin: .1rem 0; font-size: .9rem; }
.hs-details code { word-break: break-all; }
.hs-card-head { display: flex; align-items: baseline; gap: .5rem; flex-wrap: wrap; }
.hs-rank { color: var(--body-text-color-subdued); font-size: .85rem; }
.hs-title { font-weight: 600; font-size: 1.05rem; text-transform: capitalize; }
.hs-weak-badge { font-size: .75rem; padding: 0 .45rem; border-radius: 999px;
                 background: var(--neutral-200); color: var(--neutral-700); }
.hs-score { display: flex; align-items: center; gap: .5rem; }
.hs-bar { flex: 1; height: .45rem; border-radius: 999px; background: var(--neutral-200); overflow: hidden; }
.hs-bar span { display: block; height: 100%; background: var(--color-accent); }
.hs-weak .hs-bar span { background: var(--neutral-400); }
.hs-weak .hs-title { font-weight: 500; }
.hs-num { font-variant-numeric: tabular-nums; font-size: .85rem; min-width: 2.5rem; text-align: right; }
</style>"""


def build(state: AppState) -> None:
    ws = state.ws
    facets = search.facets(ws)
    index_info = gr.Markdown("", elem_id="search-status", elem_classes="hs-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            with gr.Row(equal_height=True):
                query = gr.Textbox(show_label=False, placeholder="Describe a sound…",
                                   scale=5, min_width=200, container=False, elem_id="search-query",
                                   label="Describe a sound")
                text_btn = gr.Button("Search", variant="primary", scale=1, min_width=80, elem_id="search-go")
            examples = gr.Dataset(components=[query], samples=[[q] for q in search_view.example_queries(ws, EXAMPLES)],
                                  label="Try one of these", layout="gallery", samples_per_page=EXAMPLES, elem_id="search-examples")
            intro = gr.Markdown(INTRO, elem_id="search-intro")
            summary = gr.Markdown("", elem_id="search-summary", min_height=48)   # room for the progress bar
            slots = []
            for i in range(PAGE_SIZE):
                with gr.Group(visible=False, elem_classes="hs-result") as group:
                    player = gr.HTML(js_on_load=None, padding=False)
                    with gr.Row(equal_height=True, elem_classes="hs-details-row"):
                        text = gr.Markdown(elem_classes="hs-details")
                        more = gr.Button("More like this", size="sm", scale=0, min_width=110)
                slots.append((group, player, text, more))
            with gr.Row():
                prev_btn = gr.Button("◀ Previous", size="sm", visible=False)
                next_btn = gr.Button("Next ▶", size="sm", visible=False)
        with gr.Column(scale=1, min_width=260):
            sound = gr.Audio(label="…or search with a sound", sources=["upload", "microphone"], type="filepath")
            audio_btn = gr.Button("Find similar sounds")
    with gr.Accordion("Advanced: model, index, filters, caption weight, zero-shot labels", open=False):
        with gr.Row():
            model = gr.Dropdown(label="Model", choices=model_choices(state), value=ACTIVE,
                                allow_custom_value=True, scale=2)
            check_btn = gr.Button("Check index", size="sm", scale=0)
            update_btn = gr.Button("Update index", size="sm", scale=0)
            rebuild_btn = gr.Button("Rebuild", size="sm", scale=0)
            cancel_btn = gr.Button("Cancel", size="sm", scale=0)
        hybrid = gr.Slider(0, 1, value=float(state.settings.fusion_weight), step=0.05,
                           label="Caption weight (hybrid: 0 = model only)")
        with gr.Row():
            clip_id = gr.Number(label="Clip id", value=None, precision=0, placeholder="none")
            like_btn = gr.Button("More like this clip")
        with gr.Accordion("Filters", open=False):
            f_status = gr.CheckboxGroup(list(REVIEW_STATUSES), label="Review status", visible=False)
            f_source = gr.Dropdown(facets["sources"], multiselect=True, label="Source")
            f_tags = gr.Dropdown(facets["tags"], multiselect=True, allow_custom_value=True, label="Tags (any)")
            with gr.Row():
                f_min = gr.Number(label="Min duration (s)", value=None, minimum=0, placeholder="any")
                f_max = gr.Number(label="Max duration (s)", value=None, minimum=0, placeholder="any")
            f_rec = gr.Number(label="Recording id", value=None, precision=0, placeholder="any")
            with gr.Row():
                f_w0 = gr.Number(label="Window from (s)", value=None, minimum=0, placeholder="start")
                f_w1 = gr.Number(label="Window to (s)", value=None, minimum=0, placeholder="end")
        with gr.Accordion("Zero-shot labels", open=False):
            labels = gr.Textbox(label="Labels (comma-separated)", placeholder="dog, cat, rain, engine")
            templates = gr.Textbox(label="Prompt templates (one per line, {label} marks the label)",
                                   value="\n".join(search.DEFAULT_TEMPLATES), lines=2)
            gr.Markdown("Classifies the clip id above, or else the sound you uploaded or recorded.")
            classify_btn = gr.Button("Classify")
            chart = gr.Plot(label="Probabilities")
            zero_json = gr.JSON(label="Zero-shot result", visible=False)
        with gr.Accordion("Results as JSON", open=False):
            results = gr.JSON(label="Results")
    last_query = gr.State({})           # what the page buttons repeat
    shown_ids = gr.State([])            # clip ids of the slots, for their "more like this" buttons
    seen = gr.State({})                 # the index count the status line first saw, and when (its rate)
    poll = gr.Timer(POLL_SECONDS, active=False)

    filter_inputs = [f_status, f_source, f_tags, f_min, f_max, f_rec, f_w0, f_w1]
    number_boxes = [clip_id, f_min, f_max, f_rec, f_w0, f_w1]   # sent empty on load: Gradio draws None as 0
    # the clip a "more like this" started from becomes the selected clip (ready for Classify)
    page_outputs = [results, summary, last_query, shown_ids] + [c for s in slots for c in s[:3]] + [clip_id]
    one_bar = dict(show_progress="full", show_progress_on=[summary])    # one progress bar, not one per card

    def catch_up(embedder, progress) -> str:
        """Index what changed since the last search (new clips only when few) before answering."""
        report = index.catch_up(ws, embedder, max_new=AUTO_INDEX, progress=reporter(progress), wait=False)
        if report is None:
            return ""
        if report.pending:
            return f"{report.pending} clips are not indexed yet: press **Update index**."
        if report.deferred:
            return "The index is catching up with recent changes; results may lag a few seconds."
        return ""

    def run(q: dict, model_v, hybrid_v, filters: tuple, progress) -> list:
        role = caller_role()
        private = published.reads_private(role)
        embedder = embedder_for(state, model_v, role)
        common = dict(k=PAGE_SIZE, offset=int(q.get("offset", 0)), filters=filters_from(*filters, private=private))
        try:
            notice = catch_up(embedder, progress)
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
        return render(page, q, private)

    def render(page: search.SearchPage, q: dict, private: bool) -> list:
        first = page.offset + 1
        what = {"text": f"“{q.get('query', '')}”", "audio": "your sound", "clip": f"clip {q.get('clip_id')}"}[q["kind"]]
        line = summary_line(page, what)
        if page.notice:
            line += f"  \n⚠ {page.notice}"
        out = [public_page(page, private), line, q, [h.clip_id for h in page.hits]]
        for i in range(PAGE_SIZE):
            if i < len(page.hits):
                hit = page.hits[i]
                out += [gr.update(visible=True), card_html(first + i, hit, player_url(ws, hit)),
                        hit_markdown(first + i, hit, private=private)]
            else:
                out += [gr.update(visible=False), "", ""]
        return out + [q["clip_id"] if q["kind"] == "clip" else gr.update()]

    def text_search(query_v: str, model_v, hybrid_v, filters, progress) -> list:
        if not (query_v or "").strip():
            raise gr.Error("Type a description of the sound you are looking for.")
        return run({"kind": "text", "query": query_v.strip(), "offset": 0}, model_v, hybrid_v, filters, progress)

    def do_text(model_v, query_v, hybrid_v, *filters, progress=gr.Progress()):
        return text_search(query_v, model_v, hybrid_v, filters, progress)

    def do_example(sample, model_v, hybrid_v, *filters, progress=gr.Progress()):
        """A chip: its words go into the query box and are searched."""
        query_v = (sample or [""])[0] if isinstance(sample, (list, tuple)) else str(sample or "")
        return [query_v] + text_search(query_v, model_v, hybrid_v, filters, progress)

    def do_audio(model_v, sound_v, *filters, progress=gr.Progress()):
        if not sound_v:
            raise gr.Error("Upload or record a sound first.")
        return run({"kind": "audio", "audio": sound_v, "offset": 0}, model_v, 0.0, filters, progress)

    def do_like(model_v, clip_v, hybrid_v, *filters, progress=gr.Progress()):
        if not _given(clip_v):
            raise gr.Error("Give a clip id (or use a result's “More like this”).")
        return run({"kind": "clip", "clip_id": int(clip_v), "offset": 0}, model_v, hybrid_v, filters, progress)

    def turn(delta: int):
        def go(q, model_v, hybrid_v, *filters, progress=gr.Progress()):
            if not q:
                raise gr.Error("Search for something first.")
            q = {**q, "offset": max(0, int(q.get("offset", 0)) + delta)}
            return run(q, model_v, hybrid_v, filters, progress)
        return go

    def slot_like(i: int):
        def go(ids, model_v, hybrid_v, *filters, progress=gr.Progress()):
            if i >= len(ids or []):
                raise gr.Error("No result in this place.")
            return run({"kind": "clip", "clip_id": int(ids[i]), "offset": 0}, model_v, hybrid_v, filters, progress)
        return go

    def do_classify(model_v, labels_v, templates_v, clip_v, sound_v):
        embedder = embedder_for(state, model_v, caller_role())
        use_clip = _given(clip_v)
        if not use_clip and not sound_v:
            raise gr.Error("Give a clip id or a sound to classify.")
        try:
            result = search.classify(ws, embedder, labels_v or "", templates=templates_v,
                                     clip_id=int(clip_v) if use_clip else None,
                                     source=None if use_clip else sound_v)
        except (ValueError, KeyError, index.IndexUnavailable) as exc:
            raise gr.Error(str(exc).strip("'\""))
        return probability_chart(result), result.to_dict()

    def do_status(model_v):
        embedder = embedder_for(state, model_v, caller_role(), searching=False)
        try:
            return status_markdown(index.status(ws, embedder))
        except index.IndexUnavailable as exc:
            raise gr.Error(str(exc))

    def do_index(rebuild: bool):
        def go(model_v, request: gr.Request, progress=gr.Progress()):
            embedder = embedder_for(state, model_v, caller_role())
            flag = cancel_flag(request)
            flag.clear()
            try:
                report = index.sync(ws, embedder, rebuild=rebuild, cancel=flag, progress=reporter(progress))
                gr.Info(report.summary())
                return status_markdown(index.status(ws, embedder))
            except index.IndexUnavailable as exc:
                raise gr.Error(str(exc))
        return go

    def do_cancel(request: gr.Request):
        cancel_flag(request).set()
        return "Cancelling after the current batch…"

    def tick(model_v, seen_v):
        """The status line while the index fills (the app indexes the active model at launch); the
        polling stops once the index covers the catalogue."""
        launching = launch_line(getattr(state, "launch_index", None)) if model_v in (None, "", ACTIVE) else None
        if launching:
            return launching, gr.Timer(active=True), {}
        try:
            info = index.status(ws, embedder_for(state, model_v, caller_role(), searching=False))
        except (gr.Error, index.IndexUnavailable) as exc:
            return f"Search is not ready: {exc}", gr.Timer(active=False), {}
        line, seen_v, polling = index_line(info, seen_v, time.monotonic())
        return line, gr.Timer(active=polling), seen_v

    def after_search(model_v, seen_v, page_v):
        """After a search: the status line (its catch-up may have filled the index), the page buttons
        that lead somewhere, and no more introduction."""
        page_v = page_v or {}
        return (*tick(model_v, seen_v), gr.update(visible=int(page_v.get("offset") or 0) > 0),
                gr.update(visible=bool(page_v.get("has_more"))), gr.update(visible=False))

    def on_load(model_v, request: gr.Request):
        """What this visitor may use (review statuses and index writes only for the team), the
        models and example queries as they are now, and the index status line."""
        role = state.role(request)
        team, admin = published.reads_private(role), access.allows(role, access.ADMIN)
        line, timer, seen_v = tick(model_v, {})
        return (gr.update(visible=team), gr.update(visible=team), gr.update(visible=admin),
                gr.update(visible=team), gr.update(choices=model_choices(state)),
                gr.Dataset(samples=[[q] for q in search_view.example_queries(ws, EXAMPLES)]),
                line, timer, seen_v, *[None] * len(number_boxes))

    search_inputs = [model, query, hybrid] + filter_inputs
    after = dict(fn=after_search, inputs=[model, seen, results],
                 outputs=[index_info, poll, seen, prev_btn, next_btn, intro],
                 api_name=False, show_progress="hidden")
    text_btn.click(do_text, search_inputs, page_outputs, api_name="search_text", **one_bar).then(**after)
    query.submit(do_text, search_inputs, page_outputs, api_name="search_text_submit", api_visibility="undocumented",
                 **one_bar).then(**after)
    examples.click(do_example, [examples, model, hybrid] + filter_inputs, [query] + page_outputs,
                   api_name="search_example", api_visibility="undocumented", **one_bar).then(**after)
    audio_btn.click(do_audio, [model, sound] + filter_inputs, page_outputs, api_name="search_sound",
                    **one_bar).then(**after)
    like_btn.click(do_like, [model, clip_id, hybrid] + filter_inputs, page_outputs, api_name="search_more_like_this",
                   **one_bar).then(**after)
    prev_btn.click(turn(-PAGE_SIZE), [last_query, model, hybrid] + filter_inputs, page_outputs,
                   api_name="search_prev_page", **one_bar).then(**after)
    next_btn.click(turn(PAGE_SIZE), [last_query, model, hybrid] + filter_inputs, page_outputs,
                   api_name="search_next_page", **one_bar).then(**after)
    for i, (_, _, _, more) in enumerate(slots):
        more.click(slot_like(i), [shown_ids, model, hybrid] + filter_inputs, page_outputs,
                   api_name=f"search_more_like_result_{i + 1}", api_visibility="undocumented",
                   **one_bar).then(**after)
    classify_btn.click(do_classify, [model, labels, templates, clip_id, sound], [chart, zero_json],
                       api_name="search_classify", show_progress_on=[chart])
    check_btn.click(do_status, [model], [index_info], api_name="search_index_status")
    model.change(do_status, [model], [index_info], api_name="search_model_changed", api_visibility="undocumented",
                 show_progress="hidden")
    update_btn.click(do_index(False), [model], [index_info], api_name="search_update_index", **one_bar)
    rebuild_btn.click(do_index(True), [model], [index_info], api_name="search_rebuild_index", **one_bar)
    cancel_btn.click(do_cancel, None, [index_info], api_name="search_cancel_index")
    poll.tick(tick, [model, seen], [index_info, poll, seen], api_name=False, show_progress="hidden")
    root = gr.context.Context.root_block
    if root is not None:
        root.load(on_load, [model], [f_status, update_btn, rebuild_btn, cancel_btn, model, examples,
                                     index_info, poll, seen, *number_boxes], api_name=False, show_progress="hidden")
