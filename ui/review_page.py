"""What the Review tab shows: its layout in sections, the clip as HTML / Markdown, and the keyboard
shortcuts (`HEAD`, which app.py puts into the page's <head>; the list is shown on screen).

No domain logic: what `core.pipeline.review` returns, in words. ui/review.py wires the events.
"""
from __future__ import annotations

import html
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import gradio as gr
import pandas as pd

from core.pipeline import review
from core.pipeline.export import FORMATS
from core.store.catalog import REVIEW_STATUSES
from ui.state import AppState

SPEEDS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
SHORTCUTS = [
    ("A", "accept the caption"),
    ("E", "edit the caption, then Ctrl+Enter saves it"),
    ("R", "reject (reason box: Shift+R to type one, Ctrl+Enter rejects)"),
    ("S", "skip (it comes back after the pending clips)"),
    ("U or Ctrl+Z", "undo your last action"),
    ("J or →", "next clip"),
    ("K or ←", "previous clip"),
    ("Space", "play / pause"),
    ("L", "loop on / off"),
    ("[ and ]", "slower / faster (0.5–2×)"),
    ("Esc", "leave a text box so letters act as shortcuts again"),
    ("?", "show / hide this list"),
]
SHORTCUTS_MD = ("**Keyboard** (outside text boxes): "
                + " · ".join(f"<kbd>{k}</kbd> {what}" for k, what in SHORTCUTS))

# Buttons the shortcuts click, by elem_id; the player, caption and reason boxes they focus.
HEAD = """
<script>
(() => {
  if (window.hearsayReviewKeys) return;
  window.hearsayReviewKeys = true;
  const KEYS = {a: 'review-accept', r: 'review-reject', s: 'review-skip', u: 'review-undo',
                j: 'review-next', ArrowRight: 'review-next', k: 'review-prev', ArrowLeft: 'review-prev'};
  const SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 2];
  const ACTIONS = new Set(Object.values(KEYS).concat(['review-save']));
  const byId = (id) => document.getElementById(id);
  const shown = (el) => !!el && el.offsetParent !== null;
  const box = (id) => document.querySelector('#' + id + ' textarea, #' + id + ' input');
  const player = () => document.querySelector('#review-player audio');
  // One action at a time: keys pressed while the server answers wait here, in order.
  let busy = false, waiting = [], timer = null;
  function press(id) {
    const el = byId(id);
    if (!shown(el)) return;
    if (busy) { if (waiting.length < 5) waiting.push(id); return; }
    busy = true;
    clearTimeout(timer);
    timer = setTimeout(done, 8000);
    el.click();
  }
  function done() {
    busy = false;
    clearTimeout(timer);
    const next = waiting.shift();
    if (next) setTimeout(() => press(next), 30);
  }
  function prefs() {
    const a = player();
    if (!a) return;
    const speed = parseFloat(localStorage.getItem('hearsay.review.speed') || '1');
    a.playbackRate = speed;
    a.loop = localStorage.getItem('hearsay.review.loop') === '1';
    const sel = document.querySelector('#review-player .hs-speed');
    if (sel) sel.value = String(speed);
    const loop = document.querySelector('#review-player .hs-loop');
    if (loop) loop.checked = a.loop;
    const label = document.querySelector('#review-player .hs-state');
    if (label) label.textContent = speed + '×' + (a.loop ? ' · loop' : '');
  }
  function setSpeed(v) {
    v = Math.min(2, Math.max(0.5, v));
    localStorage.setItem('hearsay.review.speed', String(v));
    prefs();
  }
  function setLoop(on) { localStorage.setItem('hearsay.review.loop', on ? '1' : '0'); prefs(); }
  // The header re-renders with a new sequence number after every answer: then the next key may go.
  let lastSeq = null;
  new MutationObserver(() => {
    const s = document.querySelector('#review-header .hs-seq');
    const seq = s ? s.getAttribute('data-seq') : null;
    if (seq !== lastSeq) { lastSeq = seq; prefs(); if (busy) done(); }
  }).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener('loadedmetadata', (ev) => { if (ev.target === player()) prefs(); }, true);
  document.addEventListener('change', (ev) => {
    if (ev.target.classList.contains('hs-speed')) setSpeed(parseFloat(ev.target.value));
    if (ev.target.classList.contains('hs-loop')) setLoop(ev.target.checked);
  }, true);
  document.addEventListener('click', (ev) => {   // mouse clicks on action buttons count as busy too
    const b = ev.target.closest && ev.target.closest('button');
    if (b && ACTIONS.has(b.id) && ev.isTrusted) { busy = true; clearTimeout(timer); timer = setTimeout(done, 8000); }
  }, true);
  document.addEventListener('keydown', (ev) => {
    if (!shown(byId('review-accept'))) return;           // only while the Review tab is open
    const t = ev.target;
    const typing = t && (t.tagName === 'TEXTAREA' || t.isContentEditable || (t.tagName === 'INPUT' &&
                   !['checkbox', 'radio', 'range', 'button', 'submit'].includes(t.type)) || t.tagName === 'SELECT');
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      if (t && t.closest && t.closest('#review-caption')) { ev.preventDefault(); t.blur(); press('review-save'); }
      else if (t && t.closest && t.closest('#review-reason')) { ev.preventDefault(); t.blur(); press('review-reject'); }
      return;
    }
    if (typing) { if (ev.key === 'Escape') { t.blur(); ev.preventDefault(); } return; }
    if (ev.key === 'z' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); press('review-undo'); return; }
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const a = player();
    if (ev.key === ' ') { ev.preventDefault(); if (a) { a.paused ? a.play() : a.pause(); } return; }
    if (ev.key === 'l' || ev.key === 'L') { ev.preventDefault(); setLoop(!(a && a.loop)); return; }
    if (ev.key === '[') { ev.preventDefault(); setSpeed((a ? a.playbackRate : 1) - 0.25); return; }
    if (ev.key === ']') { ev.preventDefault(); setSpeed((a ? a.playbackRate : 1) + 0.25); return; }
    if (ev.key === 'e' || ev.key === 'E') {
      ev.preventDefault();
      const c = box('review-caption');
      if (c) { c.focus(); c.setSelectionRange(c.value.length, c.value.length); }
      return;
    }
    if (ev.key === 'R' && ev.shiftKey) {
      ev.preventDefault();
      const r = box('review-reason');
      if (r) r.focus();
      return;
    }
    if (ev.key === '?') { ev.preventDefault(); const h = byId('review-help'); if (h) h.hidden = !h.hidden; return; }
    const id = KEYS[ev.key] || KEYS[ev.key.toLowerCase()];
    if (id) { ev.preventDefault(); press(id); }
  }, true);
})();
</script>
<style>
#review-player audio { width: 100%; }
#review-player .hs-controls { display: flex; gap: 1em; align-items: center; margin-top: .3em; font-size: .9em; }
#review-header .hs-context { font-size: .9em; opacity: .85; }
kbd { border: 1px solid #8884; border-radius: 3px; padding: 0 .3em; font-size: .85em; }
</style>
"""


# -- media: the player's WAV and the spectrogram, drawn ahead so the next clip opens at once ---------

# pyplot is not thread-safe: one drawing at a time, whether for the screen or ahead of it.
_draw_lock = threading.Lock()
_ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-prefetch")


def media(ws, clip_id: int) -> tuple[Path, str]:
    """(WAV path for the player, spectrogram PNG path) of a clip, drawn now if not yet on disk."""
    with _draw_lock:
        return ws.clip_wav_path(clip_id), str(ws.spectrogram_path(clip_id))


def _draw_ahead(ws, clip_ids: list[int]) -> None:
    for cid in clip_ids:
        try:
            media(ws, cid)
        except (OSError, ValueError, KeyError):
            pass    # shown (with the error) when the clip itself comes up


def prefetch(ws, clip_ids: list[int]) -> None:
    """Draw the next clips' media in the background, so they open at once."""
    _ahead.submit(_draw_ahead, ws, clip_ids)


# -- formatting (no domain logic: what core returns, in words) ------------------------------------

def header_html(session: dict, item: review.ReviewItem | None, note: str = "") -> str:
    seq = f'<span class="hs-seq" data-seq="{session["seq"]}" hidden></span>'
    if item is None:
        text = note or "The queue is empty: every clip in it is reviewed. Load the queue again to pick up new clips."
        return f"<div>{seq}<b>{html.escape(text)}</b></div>"
    clip, rec, rv = item.clip, item.recording, item.review
    meta = ", ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in rec.meta.items()) or "none"
    who = f" by {html.escape(rv.annotator)}" if rv.annotator else ""
    reason = f" — “{html.escape(rv.reason)}”" if rv.reason else ""
    return (f"<div>{seq}<b>Clip {clip.id}</b> · {session['pos'] + 1} / {len(session['queue'])} in queue · "
            f"status <b>{rv.status}</b>{who}{reason} (version {rv.version})"
            f"<div class='hs-context'>{html.escape(rec.original_name)} · source {html.escape(rec.source)} · "
            f"{clip.start:.2f}–{clip.end:.2f} s of {rec.duration:.2f} s · metadata: {meta}</div></div>")


def player_html(path: Path | None) -> str:
    if path is None:
        return "<div class='hs-player'>No clip.</div>"
    options = "".join(f"<option value='{s:g}'>{s:g}×</option>" for s in SPEEDS)
    return (f"<div class='hs-player'><audio controls preload='auto' src='gradio_api/file={quote(str(path))}'></audio>"
            f"<div class='hs-controls'><label>Speed <select class='hs-speed'>{options}</select></label>"
            f"<label><input type='checkbox' class='hs-loop'> Loop</label><span class='hs-state'></span></div></div>")


def teacher_md(item: review.ReviewItem | None) -> str:
    if item is None:
        return ""
    if not item.captions:
        return "*No caption yet: type one and save it as an edit.*"
    lines = []
    for c in reversed(item.captions):
        who = f"**{c.teacher or c.origin}**" + (f" · {c.model}" if c.model else "") if c.origin != "annotator" \
            else f"**{c.annotator or 'annotator'}** (edit)"
        conf = f" · confidence {c.confidence:.2f}" if c.confidence is not None else ""
        chosen = " · ✔ current" if item.caption and c.id == item.caption.id else ""
        tags = ", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) else str(k)
                         for k, v in sorted(c.tags.items(), key=lambda kv: -float(kv[1]) if isinstance(
                             kv[1], (int, float)) else 0)[:8])
        lines.append(f"{who}{conf}{chosen} · {c.created}\n> {c.text}" + (f"\n\n<small>tags: {tags}</small>" if tags
                                                                         else ""))
        if c.prompt:
            lines[-1] += f"\n<small>prompt: {html.escape(c.prompt[:120])}</small>"
    if item.annotations:
        lines.append("**Overlap decisions so far:** " + "; ".join(
            f"{who}: {a.status}" for who, a in item.annotations.items()))
    return "\n\n".join(lines)


def counters_md(state: AppState, session: dict, annotator: str) -> str:
    p = review.progress(state.ws.catalog, annotator)
    share = 100.0 * p.reviewed / p.total if p.total else 0.0
    mine = ", ".join(f"{s} {n}" for s, n in sorted(p.mine.items())) or "nothing yet"
    team = " · ".join(f"{who} {sum(c.values())}" for who, c in sorted(p.by_annotator.items())) or "nobody yet"
    need = review.overlap(state.ws.catalog)
    return (f"**Overall** {p.reviewed}/{p.total} reviewed ({share:.0f} %) · pending {p.pending} · "
            f"skipped {p.by_status.get('skipped', 0)} · accepted {p.by_status.get('accepted', 0)} · "
            f"edited {p.by_status.get('edited', 0)} · rejected {p.by_status.get('rejected', 0)}"
            + (f" · overlap: {need} people per clip" if need > 1 else "") +
            f"  \n**You ({html.escape(annotator or '?')})** {mine} · today {p.mine_today} · this session "
            f"{session['actions']}  \n**Team** {team}")


def history_tables(state: AppState, item: review.ReviewItem | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if item is None:
        return pd.DataFrame(columns=["when", "who", "action", "before", "after", "reason"]), \
            pd.DataFrame(columns=["id", "origin", "by", "created", "caption", "revert"])
    changes = pd.DataFrame(review.history(state.ws.catalog, item.clip.id),
                           columns=["when", "who", "action", "before", "after", "reason"])
    captions = pd.DataFrame([{"id": c.id, "origin": c.origin, "by": c.annotator or c.teacher or "",
                              "created": c.created, "caption": c.text,
                              "revert": "✔ current" if item.caption and c.id == item.caption.id else "↩ revert"}
                             for c in item.captions], columns=["id", "origin", "by", "created", "caption", "revert"])
    return changes, captions


def conflict_md(versions: dict) -> str:
    t, m = versions["theirs"], versions["mine"]
    return (f"### ⚠ Someone saved clip {versions['clip_id']} after you opened it\n"
            f"Nothing was overwritten. Choose which version stays (the other remains in the history).\n\n"
            f"| | who | status | caption | reason |\n|---|---|---|---|---|\n"
            f"| **theirs** (saved {t['updated']}) | {t['annotator']} | {t['status']} | {t['caption'] or ''} | "
            f"{t['reason'] or ''} |\n"
            f"| **yours** (not saved) | {m['annotator']} | {m['status']} | {m['caption'] or ''} | "
            f"{m['reason'] or ''} |")


# -- the layout, in sections: each adds its components to `c` ----------------------------------------

def queue_controls(c: SimpleNamespace) -> None:
    with gr.Row(equal_height=True):
        c.annotator = gr.Textbox(label="Annotator", placeholder="your name (remembered in this browser)", scale=2,
                                 elem_id="review-annotator")
        c.order = gr.Dropdown([(label, key) for key, label in review.ORDERS.items()], value="pending",
                              label="Order", scale=2)
        c.scope = gr.Dropdown([(label, key) for key, label in review.SCOPES.items()], value="todo",
                              label="Queue", scale=2)
        c.seed = gr.Number(0, label="Seed (random order)", precision=0, scale=1)
        c.load_btn = gr.Button("Load queue", scale=1)
    c.counters = gr.Markdown(elem_id="review-counters")
    c.help_md = gr.Markdown(SHORTCUTS_MD, elem_id="review-help")


def clip_panel(c: SimpleNamespace) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            c.header = gr.HTML(elem_id="review-header", js_on_load=None)
            c.player = gr.HTML(elem_id="review-player", js_on_load=None)
            c.spectrogram = gr.Image(label="Spectrogram", type="filepath", interactive=False, height=220,
                                     elem_id="review-spectrogram")
            with gr.Row():
                c.prev_btn = gr.Button("◀ Previous (K)", elem_id="review-prev", size="sm")
                c.next_btn = gr.Button("Next (J) ▶", elem_id="review-next", size="sm")
        with gr.Column(scale=3):
            c.teacher = gr.Markdown(label="Teacher captions", elem_id="review-teacher", max_height=260)
            c.caption = gr.Textbox(label="Caption (edit, then Save edit)", lines=2, elem_id="review-caption")
            c.reason = gr.Textbox(label="Reject reason (optional)", elem_id="review-reason")
            with gr.Row():
                c.accept_btn = gr.Button("Accept (A)", variant="primary", elem_id="review-accept")
                c.save_btn = gr.Button("Save edit (Ctrl+Enter)", elem_id="review-save")
                c.reject_btn = gr.Button("Reject (R)", variant="stop", elem_id="review-reject")
            with gr.Row():
                c.skip_btn = gr.Button("Skip (S)", elem_id="review-skip")
                c.undo_btn = gr.Button("Undo (U)", elem_id="review-undo")
            c.status = gr.Markdown(elem_id="review-status")
            # "hidden": stays mounted
            with gr.Group(visible="hidden", elem_id="review-conflict") as c.conflict_box:
                c.conflict_md = gr.Markdown()
                with gr.Row():
                    c.theirs_btn = gr.Button("Keep theirs", elem_id="review-keep-theirs")
                    c.mine_btn = gr.Button("Save mine over theirs", variant="primary", elem_id="review-keep-mine")
            with gr.Accordion("Guidelines", open=False):
                c.guide_md = gr.Markdown()            # filled when an annotator's page loads (not in /config)
                with gr.Accordion("Edit guidelines", open=False):
                    c.guide_edit = gr.Textbox(lines=8, label="Markdown", show_label=False)
                    c.guide_btn = gr.Button("Save guidelines", size="sm")


def history_section(c: SimpleNamespace) -> None:
    with gr.Accordion("History of this clip", open=False) as c.history_box:
        gr.Markdown("Every change is kept. Click **↩ revert** on a caption to make it the chosen one again.")
        c.changes = gr.Dataframe(interactive=False, wrap=True, label="Changes")
        c.caption_list = gr.Dataframe(interactive=False, wrap=True, label="Captions", elem_id="review-captions")
        with gr.Row(equal_height=True):
            c.revert_id = gr.Number(label="Caption id", precision=0, placeholder="from the history above")
            c.revert_btn = gr.Button("Revert to this caption", size="sm")
            c.open_id = gr.Number(label="Open another clip by id", precision=0, minimum=0, placeholder="clip id")
            c.open_btn = gr.Button("Open clip", size="sm")


def bulk_section(c: SimpleNamespace, cat) -> None:
    with gr.Accordion("Bulk actions", open=False):
        with gr.Row():
            c.bulk_action = gr.Dropdown([(label, key) for key, label in review.BULK_ACTIONS.items()], value="accept",
                                        label="Action")
            c.bulk_min = gr.Slider(0, 1, 0.8, step=0.01, label="Minimum teacher confidence")
            c.bulk_max = gr.Slider(0, 1, 1.0, step=0.01, label="Maximum teacher confidence")
        with gr.Row():
            c.bulk_text = gr.Textbox(label="File name or caption contains")
            c.bulk_source = gr.Dropdown(["(any)"] + cat.sources(), value="(any)", label="Source",
                                        allow_custom_value=True)
            c.bulk_status = gr.Dropdown(["(default)", *REVIEW_STATUSES], value="(default)", label="Current status")
            c.bulk_reason = gr.Textbox(label="Reason (reject)")
        with gr.Row():
            c.bulk_preview_btn = gr.Button("Preview")
            c.bulk_apply_btn = gr.Button("Apply to the previewed clips", variant="stop", interactive=False)
        c.bulk_msg = gr.Markdown()
        c.bulk_table = gr.Dataframe(interactive=False, wrap=True)


def agreement_section(c: SimpleNamespace, cat) -> None:
    with gr.Accordion("Overlap and agreement (leads)", open=False):
        with gr.Row():
            c.overlap_n = gr.Number(review.overlap(cat), label="People per clip (1 = no overlap)", precision=0,
                                    minimum=1, maximum=10)
            c.overlap_btn = gr.Button("Save", size="sm")
            c.agree_btn = gr.Button("Compute agreement", size="sm")
        c.agree_md = gr.Markdown()
        c.agree_table = gr.Dataframe(interactive=False, wrap=True)
        with gr.Row():
            c.resolve_id = gr.Number(label="Clip id", precision=0, placeholder="clip id")
            c.resolve_take = gr.Textbox(label="Keep the decision of (annotator)")
            c.resolve_text = gr.Textbox(label="…or write the final caption")
            c.resolve_btn = gr.Button("Resolve", size="sm")


def export_section(c: SimpleNamespace) -> None:
    with gr.Accordion("Export / import", open=False):
        with gr.Row():
            c.fmt = gr.Radio(list(FORMATS), value="jsonl", label="Format")
            c.export_dir = gr.Textbox(label="Export folder on the server (new or empty; blank: workspace/exports/…)")
            c.export_status = gr.CheckboxGroup(list(REVIEW_STATUSES),
                                               label="Only these statuses (none: all captioned)")
        with gr.Row():
            c.export_btn = gr.Button("Export")
            c.export_file = gr.File(label="Download (.zip)", interactive=False)
        with gr.Row():
            c.import_dir = gr.Textbox(label="Import an export: folder on the server")
            c.import_zip = gr.File(label="…or upload the export as .zip", file_types=[".zip"], type="filepath")
            c.import_btn = gr.Button("Import")
        c.port_msg = gr.Markdown()
