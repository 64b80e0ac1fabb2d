"""Review tab: work through a queue of clips, accepting, editing, rejecting or skipping teacher captions.

Each event calls one function of `core.pipeline.review` or `core.pipeline.export`; this module only lays out and formats.
Keyboard shortcuts live in `HEAD` (app.py puts it into the page's <head>); the list is shown on screen.
"""
from __future__ import annotations

import html
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import pandas as pd
from gradio.context import Context

from core.auth import access

from core.pipeline import review
from core.store.catalog import REVIEW_STATUSES
from core.pipeline.export import FORMATS, export, extract_zip, import_export
from ui.progress import one_bar, reporter, steps
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


def _media(ws, clip_id: int) -> tuple[Path, str]:
    with _draw_lock:
        return ws.clip_wav_path(clip_id), str(ws.spectrogram_path(clip_id))


def _draw_ahead(ws, clip_ids: list[int]) -> None:
    for cid in clip_ids:
        try:
            _media(ws, cid)
        except (OSError, ValueError, KeyError):
            pass    # shown (with the error) when the clip itself comes up


# -- formatting (no domain logic: what core returns, in words) ------------------------------------

def new_session() -> dict:
    return {"queue": [], "pos": 0, "version": 0, "scope": "todo", "done": [], "conflict": None,
            "bulk": None, "seq": 0, "actions": 0, "history_open": False}


def _current(session: dict) -> int | None:
    q = session["queue"]
    return q[session["pos"]] if 0 <= session["pos"] < len(q) else None


def _header_html(session: dict, item: review.ReviewItem | None, note: str = "") -> str:
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


def _player_html(path: Path | None) -> str:
    if path is None:
        return "<div class='hs-player'>No clip.</div>"
    options = "".join(f"<option value='{s:g}'>{s:g}×</option>" for s in SPEEDS)
    return (f"<div class='hs-player'><audio controls preload='auto' src='gradio_api/file={quote(str(path))}'></audio>"
            f"<div class='hs-controls'><label>Speed <select class='hs-speed'>{options}</select></label>"
            f"<label><input type='checkbox' class='hs-loop'> Loop</label><span class='hs-state'></span></div></div>")


def _teacher_md(item: review.ReviewItem | None) -> str:
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


def _counters_md(state: AppState, session: dict, annotator: str) -> str:
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


def _history_tables(state: AppState, item: review.ReviewItem | None) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def _conflict_md(versions: dict) -> str:
    t, m = versions["theirs"], versions["mine"]
    return (f"### ⚠ Someone saved clip {versions['clip_id']} after you opened it\n"
            f"Nothing was overwritten. Choose which version stays (the other remains in the history).\n\n"
            f"| | who | status | caption | reason |\n|---|---|---|---|---|\n"
            f"| **theirs** (saved {t['updated']}) | {t['annotator']} | {t['status']} | {t['caption'] or ''} | "
            f"{t['reason'] or ''} |\n"
            f"| **yours** (not saved) | {m['annotator']} | {m['status']} | {m['caption'] or ''} | "
            f"{m['reason'] or ''} |")


# -- downloads ------------------------------------------------------------------------------------
# BrowserState needs a key, and the browser needs it too (it is in /config for anyone): not a secret.
# What it keeps is a display name the same browser typed; a fixed key lets it survive restarts.
BROWSER_STATE_KEY = "hearsay-annotator-name"
DOWNLOAD_PREFIX, DOWNLOAD_TTL = "hearsay-download-", 2 * 3600


def download_zip(folder: Path) -> str:
    """Zip an export for the Download box. The zip goes to a fresh private temp folder with a random name,
    never to a folder served by path: Gradio copies it into its own cache under a hashed name and hands
    that link to the caller only. Downloads older than DOWNLOAD_TTL are removed on the way."""
    expire_downloads()
    staging = Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX))
    return shutil.make_archive(str(staging / folder.name), "zip", folder.parent, folder.name)


def expire_downloads(now: float | None = None) -> int:
    """Remove staged download folders older than DOWNLOAD_TTL; returns how many went."""
    import time
    now = time.time() if now is None else now
    gone = 0
    for old in Path(tempfile.gettempdir()).glob(DOWNLOAD_PREFIX + "*"):
        try:
            if old.is_dir() and now - old.stat().st_mtime > DOWNLOAD_TTL:
                shutil.rmtree(old, ignore_errors=True)
                gone += 1
        except OSError:
            continue
    return gone


# -- the tab ----------------------------------------------------------------------------------------

def build(state: AppState) -> None:
    cat = state.ws.catalog
    session = gr.State(new_session())
    remembered = gr.BrowserState("", storage_key="hearsay-annotator", secret=BROWSER_STATE_KEY)

    with gr.Row(equal_height=True):
        annotator = gr.Textbox(label="Annotator", placeholder="your name (remembered in this browser)", scale=2,
                               elem_id="review-annotator")
        order = gr.Dropdown([(label, key) for key, label in review.ORDERS.items()], value="pending",
                            label="Order", scale=2)
        scope = gr.Dropdown([(label, key) for key, label in review.SCOPES.items()], value="todo",
                            label="Queue", scale=2)
        seed = gr.Number(0, label="Seed (random order)", precision=0, scale=1)
        load_btn = gr.Button("Load queue", scale=1)
    counters = gr.Markdown(elem_id="review-counters")
    help_md = gr.Markdown(SHORTCUTS_MD, elem_id="review-help")
    with gr.Row():
        with gr.Column(scale=3):
            header = gr.HTML(elem_id="review-header", js_on_load=None)
            player = gr.HTML(elem_id="review-player", js_on_load=None)
            spectrogram = gr.Image(label="Spectrogram", type="filepath", interactive=False, height=220,
                                   elem_id="review-spectrogram")
            with gr.Row():
                prev_btn = gr.Button("◀ Previous (K)", elem_id="review-prev", size="sm")
                next_btn = gr.Button("Next (J) ▶", elem_id="review-next", size="sm")
        with gr.Column(scale=3):
            teacher = gr.Markdown(label="Teacher captions", elem_id="review-teacher", max_height=260)
            caption = gr.Textbox(label="Caption (edit, then Save edit)", lines=2, elem_id="review-caption")
            reason = gr.Textbox(label="Reject reason (optional)", elem_id="review-reason")
            with gr.Row():
                accept_btn = gr.Button("Accept (A)", variant="primary", elem_id="review-accept")
                save_btn = gr.Button("Save edit (Ctrl+Enter)", elem_id="review-save")
                reject_btn = gr.Button("Reject (R)", variant="stop", elem_id="review-reject")
            with gr.Row():
                skip_btn = gr.Button("Skip (S)", elem_id="review-skip")
                undo_btn = gr.Button("Undo (U)", elem_id="review-undo")
            status = gr.Markdown(elem_id="review-status")
            with gr.Group(visible="hidden", elem_id="review-conflict") as conflict_box:   # "hidden": stays mounted
                conflict_md = gr.Markdown()
                with gr.Row():
                    theirs_btn = gr.Button("Keep theirs", elem_id="review-keep-theirs")
                    mine_btn = gr.Button("Save mine over theirs", variant="primary", elem_id="review-keep-mine")
            with gr.Accordion("Guidelines", open=False):
                guide_md = gr.Markdown()            # filled when an annotator's page loads (not in /config)
                with gr.Accordion("Edit guidelines", open=False):
                    guide_edit = gr.Textbox(lines=8, label="Markdown", show_label=False)
                    guide_btn = gr.Button("Save guidelines", size="sm")

    with gr.Accordion("History of this clip", open=False) as history_box:
        gr.Markdown("Every change is kept. Click **↩ revert** on a caption to make it the chosen one again.")
        changes = gr.Dataframe(interactive=False, wrap=True, label="Changes")
        caption_list = gr.Dataframe(interactive=False, wrap=True, label="Captions", elem_id="review-captions")
        with gr.Row(equal_height=True):
            revert_id = gr.Number(label="Caption id", precision=0, placeholder="from the history above")
            revert_btn = gr.Button("Revert to this caption", size="sm")
            open_id = gr.Number(label="Open another clip by id", precision=0, minimum=0, placeholder="clip id")
            open_btn = gr.Button("Open clip", size="sm")

    with gr.Accordion("Bulk actions", open=False):
        with gr.Row():
            bulk_action = gr.Dropdown([(label, key) for key, label in review.BULK_ACTIONS.items()], value="accept",
                                      label="Action")
            bulk_min = gr.Slider(0, 1, 0.8, step=0.01, label="Minimum teacher confidence")
            bulk_max = gr.Slider(0, 1, 1.0, step=0.01, label="Maximum teacher confidence")
        with gr.Row():
            bulk_text = gr.Textbox(label="File name or caption contains")
            bulk_source = gr.Dropdown(["(any)"] + cat.sources(), value="(any)", label="Source",
                                      allow_custom_value=True)
            bulk_status = gr.Dropdown(["(default)", *REVIEW_STATUSES], value="(default)", label="Current status")
            bulk_reason = gr.Textbox(label="Reason (reject)")
        with gr.Row():
            bulk_preview_btn = gr.Button("Preview")
            bulk_apply_btn = gr.Button("Apply to the previewed clips", variant="stop", interactive=False)
        bulk_msg = gr.Markdown()
        bulk_table = gr.Dataframe(interactive=False, wrap=True)

    with gr.Accordion("Overlap and agreement (leads)", open=False):
        with gr.Row():
            overlap_n = gr.Number(review.overlap(cat), label="People per clip (1 = no overlap)", precision=0,
                                  minimum=1, maximum=10)
            overlap_btn = gr.Button("Save", size="sm")
            agree_btn = gr.Button("Compute agreement", size="sm")
        agree_md = gr.Markdown()
        agree_table = gr.Dataframe(interactive=False, wrap=True)
        with gr.Row():
            resolve_id = gr.Number(label="Clip id", precision=0, placeholder="clip id")
            resolve_take = gr.Textbox(label="Keep the decision of (annotator)")
            resolve_text = gr.Textbox(label="…or write the final caption")
            resolve_btn = gr.Button("Resolve", size="sm")

    with gr.Accordion("Export / import", open=False):
        with gr.Row():
            fmt = gr.Radio(list(FORMATS), value="jsonl", label="Format")
            export_dir = gr.Textbox(label="Export folder on the server (new or empty; blank: workspace/exports/…)")
            export_status = gr.CheckboxGroup(list(REVIEW_STATUSES), label="Only these statuses (none: all captioned)")
        with gr.Row():
            export_btn = gr.Button("Export")
            export_file = gr.File(label="Download (.zip)", interactive=False)
        with gr.Row():
            import_dir = gr.Textbox(label="Import an export: folder on the server")
            import_zip = gr.File(label="…or upload the export as .zip", file_types=[".zip"], type="filepath")
            import_btn = gr.Button("Import")
        port_msg = gr.Markdown()

    # -- handlers -------------------------------------------------------------------------------
    view = [session, header, player, spectrogram, teacher, caption, reason, status, counters, conflict_box,
            conflict_md, changes, caption_list]

    def show(sess: dict, name: str, message: str = "", item: review.ReviewItem | None = None, keep_text=None):
        """Everything the screen shows for the current clip; `message` goes to the status line."""
        sess["seq"] += 1
        cid = _current(sess)
        if item is None and cid is not None:
            item = review.load_item(cat, cid, name)
        if item is not None:
            sess["version"] = item.review.version
        wav = spec = None
        if item is not None:
            try:
                wav, spec = _media(state.ws, item.clip.id)
            except (OSError, ValueError) as exc:       # audio gone from disk: say so, keep reviewing
                message = f"{message}  \n⚠ cannot read this clip's audio ({exc})"
            _ahead.submit(_draw_ahead, state.ws, sess["queue"][sess["pos"] + 1:sess["pos"] + 4])
        conflict = sess.get("conflict")
        # the history tables are the costliest outputs: filled only while their accordion is open
        changes_df, captions_df = _history_tables(state, item) if sess.get("history_open") else (gr.skip(), gr.skip())
        text = keep_text if keep_text is not None else (item.caption.text if item and item.caption else "")
        return (sess, _header_html(sess, item), _player_html(wav), spec, _teacher_md(item), text,
                "" if keep_text is None else gr.update(), message, _counters_md(state, sess, name),
                gr.update(visible=True if conflict else "hidden"),
                _conflict_md(conflict["versions"]) if conflict else "",
                changes_df, captions_df)

    def advance(sess: dict, name: str) -> None:
        """Move to the next clip still waiting (colleagues may have decided some meanwhile)."""
        sess["pos"] += 1
        while sess["scope"] == "todo" and sess["pos"] < len(sess["queue"]) and not review.still_todo(
                cat, sess["queue"][sess["pos"]], name):
            sess["pos"] += 1

    def whoami(saved: str, request: gr.Request):
        user = getattr(request, "username", None)
        if user:
            return gr.update(value=user, interactive=False, info="signed in")
        return gr.update(value=saved or "", interactive=True)

    def load_queue(sess, name, order_key, scope_key, seed_value, progress=gr.Progress()):
        sess = dict(sess, conflict=None, scope=scope_key)
        scores, note = None, ""
        if order_key == "disagreement":
            embedder = review.active_embedder(state.ws)
            if embedder is None:
                order_key, note = "low-confidence", "No student model is active yet: ordered by teacher confidence. "
            else:
                ids = [cid for cid in review.build_queue(cat, "pending", scope=scope_key, annotator=name)]
                scores = review.disagreement_scores(state.ws, ids, embedder,
                                                    progress=steps(progress, "student embeddings"))
        sess["queue"] = review.build_queue(cat, order_key, scope=scope_key, seed=int(seed_value or 0),
                                           annotator=name, scores=scores)
        sess["pos"] = 0
        return show(sess, name, f"{note}{len(sess['queue'])} clips in the queue.")

    def act(kind: str):
        def handler(sess, name, text, why):
            cid = _current(sess)
            if cid is None:
                return show(sess, name, "Nothing to review here: load the queue.")
            name = (name or "").strip()
            try:
                if kind == "accept":
                    saved = review.accept(cat, cid, name, sess["version"])
                elif kind == "edit":
                    saved = review.edit(cat, cid, name, text, sess["version"])
                elif kind == "reject":
                    saved = review.reject(cat, cid, name, sess["version"], reason=why)
                else:
                    saved = review.skip(cat, cid, name, sess["version"])
            except review.ReviewConflict as exc:
                sess["conflict"] = {"decision": exc.mine.__dict__, "theirs_version": exc.theirs.version,
                                    "versions": exc.versions(cat)}
                return show(sess, name, "⚠ Conflict: see both versions below.", keep_text=text)
            except ValueError as exc:
                return show(sess, name, f"⚠ {exc}", keep_text=text)
            sess["done"].append([cid, saved.review.version])
            sess["actions"] += 1
            advance(sess, name)
            return show(sess, name, f"✔ {saved.message}")
        return handler

    def keep_mine(sess, name):
        c = sess.get("conflict")
        if not c:
            return show(sess, name, "No conflict to settle.")
        try:
            saved = review.decide(cat, review.Decision(**c["decision"]), c["theirs_version"])
        except review.ReviewConflict as exc:        # yet another save meanwhile: show the newest
            sess["conflict"] = {"decision": exc.mine.__dict__, "theirs_version": exc.theirs.version,
                                "versions": exc.versions(cat)}
            return show(sess, name, "⚠ Saved again by someone meanwhile: compare once more.")
        sess["conflict"] = None
        sess["done"].append([saved.review.clip_id, saved.review.version])
        sess["actions"] += 1
        advance(sess, name)
        return show(sess, name, f"✔ yours kept: {saved.message}")

    def keep_theirs(sess, name):
        sess["conflict"] = None
        return show(sess, name, "Kept theirs; your version was not saved (it is shown above until you move on).")

    def undo(sess, name):
        if not sess["done"]:
            return show(sess, name, "Nothing of yours to undo in this session.")
        cid, version = sess["done"][-1]
        try:
            saved = review.undo(cat, cid, (name or "").strip(), version)
        except review.ReviewConflict as exc:
            return show(sess, name, f"⚠ {exc}")
        except ValueError as exc:
            sess["done"].pop()
            return show(sess, name, f"⚠ {exc}")
        sess["done"].pop()
        sess["actions"] += 1
        if cid in sess["queue"]:
            sess["pos"] = sess["queue"].index(cid)
        else:
            sess["queue"].insert(sess["pos"], cid)
        return show(sess, name, f"↶ {saved.message}: clip {cid} is {saved.review.status} again")

    def move(step: int):
        def handler(sess, name):
            sess["conflict"] = None
            sess["pos"] = min(max(sess["pos"] + step, 0), len(sess["queue"]))
            return show(sess, name, "" if _current(sess) is not None else "End of the queue.")
        return handler

    def open_clip(sess, name, clip_id):
        try:
            cat.get_clip(int(clip_id))
        except (KeyError, TypeError, ValueError):
            return show(sess, name, f"⚠ no clip {clip_id}")
        cid = int(clip_id)
        if cid not in sess["queue"]:
            sess["queue"].insert(min(sess["pos"], len(sess["queue"])), cid)
        sess["pos"] = sess["queue"].index(cid)
        sess["conflict"] = None
        return show(sess, name, f"Opened clip {cid}.")

    def revert(sess, name, caption_id):
        cid = _current(sess)
        if cid is None or caption_id is None:
            return show(sess, name, "Open a clip and choose a caption id to revert to.")
        try:
            saved = review.revert(cat, cid, int(caption_id), (name or "").strip(), sess["version"])
        except review.ReviewConflict as exc:
            sess["conflict"] = {"decision": exc.mine.__dict__, "theirs_version": exc.theirs.version,
                                "versions": exc.versions(cat)}
            return show(sess, name, "⚠ Conflict: see both versions below.")
        except (KeyError, ValueError) as exc:
            return show(sess, name, f"⚠ {exc}")
        sess["done"].append([cid, saved.review.version])
        sess["actions"] += 1
        return show(sess, name, f"↩ reverted: {saved.message}")

    def revert_clicked(sess, name, evt: gr.SelectData):
        row = evt.row_value or []
        if evt.index is None or len(row) < 6 or evt.index[1] != 5 or row[5] != "↩ revert":
            return show(sess, name, "")        # a click elsewhere in the table does nothing
        return revert(sess, name, row[0])

    def save_guidelines(text):
        md = review.set_guidelines(cat, text)
        return md, md

    def bulk_filter(text, source, status, lo, hi, action):
        return review.BulkFilter(text=text or "", source=None if source in (None, "(any)") else source,
                                 status=None if status in (None, "(default)") else status,
                                 min_confidence=lo if action == "accept" or lo > 0 else None,
                                 max_confidence=hi if hi < 1 else None)

    def bulk_preview(sess, action, lo, hi, text, source, status_value):
        preview = review.preview_bulk(cat, action, bulk_filter(text, source, status_value, lo, hi, action))
        sess["bulk"] = {"action": action, "targets": preview.targets}
        msg = (f"**{preview.count} clips** would be changed by “{review.BULK_ACTIONS[action]}”. "
               f"Nothing is changed until you apply; clips changed by someone after this preview are left alone.")
        return sess, msg, pd.DataFrame(preview.sample), gr.update(interactive=preview.count > 0)

    def bulk_apply(sess, name, why, progress=gr.Progress()):
        b = sess.get("bulk")
        if not b:
            return sess, "Preview first.", gr.update(interactive=False)
        preview = review.BulkPreview(b["action"], review.BulkFilter(), [tuple(t) for t in b["targets"]], [])
        try:
            result = review.apply_bulk(cat, preview, (name or "").strip(), reason=why or None,
                                       progress=steps(progress, "saving"))
        except ValueError as exc:
            return sess, f"⚠ {exc}", gr.update()
        sess["bulk"] = None
        return sess, "✔ " + result.summary(b["action"]), gr.update(interactive=False)

    def save_overlap(n):
        try:
            return f"Each clip now needs {review.set_overlap(cat, int(n or 1))} people."
        except ValueError as exc:
            return f"⚠ {exc}"

    def compute_agreement():
        a = review.agreement(cat)
        kappa = "n/a" if a.fleiss_kappa is None else f"{a.fleiss_kappa:.3f}"
        sim = "n/a" if a.caption_similarity is None else f"{a.caption_similarity:.3f}"
        pairs = " · ".join(f"{pair}: {'n/a' if k is None else f'{k:.3f}'} ({n} clips)"
                           for pair, (k, n) in a.cohen_kappa.items()) or "no pairs yet"
        md = (f"**{a.items} clips** judged by two people or more · annotators: {', '.join(a.annotators) or '—'}  \n"
              f"Fleiss κ (accept vs reject): **{kappa}** · Cohen κ per pair: {pairs}  \n"
              f"Caption similarity (MiniLM cosine, accepted captions): **{sim}** · "
              f"**{len(a.disagreements)} disagreements** to resolve")
        rows = [{"clip": d.clip_id, "status": d.review.status,
                 "similarity": None if d.similarity is None else round(d.similarity, 3),
                 **{who: f"{v['status']}: {v['caption']}" + (f" ({v['reason']})" if v["reason"] else "")
                    for who, v in d.decisions.items()}} for d in a.disagreements]
        return md, pd.DataFrame(rows)

    def resolve(name, clip_id, take, text):
        try:
            cid = int(clip_id)
            saved = review.resolve(cat, cid, (name or "").strip(), cat.get_review(cid).version,
                                   take=(take or "").strip() or None, text=text)
        except review.ReviewConflict as exc:
            return f"⚠ {exc}; compute agreement again and retry"
        except (KeyError, TypeError, ValueError) as exc:
            return f"⚠ {exc}"
        return f"✔ clip {clip_id} resolved: {saved.review.status}"

    def do_export(fmt_value, folder, statuses, progress=gr.Progress()):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(folder).expanduser() if folder and folder.strip() else state.ws.root / "exports" / \
            f"{stamp}-{fmt_value}"
        try:
            report = export(state.ws, out, fmt_value, statuses=statuses or None,
                            progress=reporter(progress))
        except (FileExistsError, ValueError) as exc:
            return f"⚠ {exc}", None
        return "✔ " + report.summary(), download_zip(out)

    def do_import(folder, upload, request: gr.Request, progress=gr.Progress()):
        # The signed-in person authors what is restored; only an admin keeps the export's own names.
        policy = getattr(root, "hearsay_policy", None) or access.load_policy(state.settings)
        scratch = None
        try:
            if upload:
                scratch = Path(tempfile.mkdtemp(dir=state.ws.cache_dir))
                src = extract_zip(upload, scratch, max_mb=state.ws.settings.max_upload_mb)
            elif folder and folder.strip():
                src = Path(folder).expanduser()
            else:
                return "Choose a folder or upload a .zip first."
            report = import_export(state.ws, src, importer=access.user_of(request),
                                   keep_authors=policy.role_of(request) == access.ADMIN,
                                   progress=reporter(progress))
        except (FileNotFoundError, ValueError, OSError) as exc:
            return f"⚠ {exc}"
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return "✔ " + report.summary()

    # -- wiring (every event has an api_name; False where it only serves the page) -----------------
    act_inputs = [session, annotator, caption, reason]
    root = Context.root_block
    if root is not None:
        root.load(lambda: (review.guidelines(cat),) * 2, None, [guide_md, guide_edit], api_name=False)
        root.load(whoami, [remembered], [annotator], api_name=False).then(
            load_queue, [session, annotator, order, scope, seed], view, api_name=False, **one_bar(status))
    annotator.change(lambda name: name, [annotator], [remembered], api_name=False)
    # The stored name arrives when the tab mounts (BrowserState then fires change); a signed-in name wins.
    remembered.change(lambda saved, name: gr.skip() if (name or not saved) else saved, [remembered, annotator],
                      [annotator], api_name=False)
    load_btn.click(load_queue, [session, annotator, order, scope, seed], view, api_name="review_load_queue",
                   **one_bar(status))
    accept_btn.click(act("accept"), act_inputs, view, api_name="review_accept")
    save_btn.click(act("edit"), act_inputs, view, api_name="review_edit")
    reject_btn.click(act("reject"), act_inputs, view, api_name="review_reject")
    skip_btn.click(act("skip"), act_inputs, view, api_name="review_skip")
    undo_btn.click(undo, [session, annotator], view, api_name="review_undo")
    prev_btn.click(move(-1), [session, annotator], view, api_name="review_previous")
    next_btn.click(move(+1), [session, annotator], view, api_name="review_next")
    open_btn.click(open_clip, [session, annotator, open_id], view, api_name="review_open")
    mine_btn.click(keep_mine, [session, annotator], view, api_name="review_keep_mine")
    theirs_btn.click(keep_theirs, [session, annotator], view, api_name="review_keep_theirs")
    revert_btn.click(revert, [session, annotator, revert_id], view, api_name="review_revert")
    caption_list.select(revert_clicked, [session, annotator], view, api_name=False)

    def history_toggle(is_open: bool):
        def handler(sess, name):
            sess["history_open"] = is_open
            return show(sess, name) if is_open else (sess, *[gr.skip()] * (len(view) - 1))
        return handler
    history_box.expand(history_toggle(True), [session, annotator], view, api_name="review_history")
    history_box.collapse(history_toggle(False), [session, annotator], view, api_name=False)
    guide_btn.click(save_guidelines, [guide_edit], [guide_md, guide_edit], api_name="review_save_guidelines")
    bulk_preview_btn.click(bulk_preview, [session, bulk_action, bulk_min, bulk_max, bulk_text, bulk_source,
                                          bulk_status], [session, bulk_msg, bulk_table, bulk_apply_btn],
                           api_name="review_bulk_preview")
    bulk_apply_btn.click(bulk_apply, [session, annotator, bulk_reason], [session, bulk_msg, bulk_apply_btn],
                         api_name="review_bulk_apply", **one_bar(bulk_msg)).then(
        lambda s, n: _counters_md(state, s, n), [session, annotator], [counters], api_name=False)
    overlap_btn.click(save_overlap, [overlap_n], [agree_md], api_name="review_set_overlap")
    agree_btn.click(compute_agreement, None, [agree_md, agree_table], api_name="review_agreement")
    resolve_btn.click(resolve, [annotator, resolve_id, resolve_take, resolve_text], [agree_md],
                      api_name="review_resolve")
    export_btn.click(do_export, [fmt, export_dir, export_status], [port_msg, export_file], api_name="review_export", **one_bar(port_msg))
    import_btn.click(do_import, [import_dir, import_zip], [port_msg], api_name="review_import")
