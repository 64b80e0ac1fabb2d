"""What a search result looks like on the page: the player's URL, the result card and its details,
the summary line, the results as JSON, the zero-shot chart, the index status lines, and the tab's
CSS (`HEAD`, which app.py puts into the page's <head> through ui/search.py).

Result players are plain HTML <audio> elements pointing at the app's /audio/<content key>.wav route
(ui/api.py), which makes a clip's WAV on its first play (see ui/search.py)."""
from __future__ import annotations

import html
import re
import time
from pathlib import PurePosixPath
from urllib.parse import quote

from core.pipeline import search, search_view
from ui.progress import rate_and_eta

STALLED_SECONDS = 20.0        # polling stops when the count has not moved for this long (nobody is indexing)

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
