"""Review tab: work through a queue of clips, accepting, editing, rejecting or skipping teacher captions.

Each event calls one function of `core.pipeline.review` or `core.pipeline.export`: the handlers are the
methods of `ReviewEvents` (plain values in, what the page shows out); `build` lays out the tab
(sections in ui/review_page.py, with the keyboard shortcuts `HEAD`) and wires the events.
"""
from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
from gradio.context import Context

from core.auth import access
from core.pipeline import review
from core.pipeline.export import export, extract_zip, import_export
from ui import review_page as page
from ui.review_page import HEAD  # noqa: F401  (app.py reads each tab's HEAD)
from ui.progress import one_bar, reporter, steps
from ui.state import AppState


def new_session() -> dict:
    return {"queue": [], "pos": 0, "version": 0, "scope": "todo", "done": [], "conflict": None,
            "bulk": None, "seq": 0, "actions": 0, "history_open": False}


def _current(session: dict) -> int | None:
    q = session["queue"]
    return q[session["pos"]] if 0 <= session["pos"] < len(q) else None


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


# -- the handlers: what each event does, on the values the page sends --------------------------------
# Most return the whole `VIEW` (see `ReviewEvents.show`), in this order.
VIEW = ("session", "header", "player", "spectrogram", "teacher", "caption", "reason", "status", "counters",
        "conflict_box", "conflict_md", "changes", "caption_list")


def _conflict_state(exc: review.ReviewConflict, cat) -> dict:
    return {"decision": exc.mine.__dict__, "theirs_version": exc.theirs.version, "versions": exc.versions(cat)}


def _bulk_filter(text, source, status, lo, hi, action) -> review.BulkFilter:
    return review.BulkFilter(text=text or "", source=None if source in (None, "(any)") else source,
                             status=None if status in (None, "(default)") else status,
                             min_confidence=lo if action == "accept" or lo > 0 else None,
                             max_confidence=hi if hi < 1 else None)


def _agreement_view(a) -> tuple[str, pd.DataFrame]:
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


class ReviewEvents:
    """The Review tab's event handlers. Each takes the values the page sends (the session dict first) and
    returns what the page shows, so it can be called without a server."""

    def __init__(self, state: AppState, root=None):
        self.state, self.cat, self.root = state, state.ws.catalog, root

    # -- the screen -------------------------------------------------------------------------------
    def show(self, sess: dict, name: str, message: str = "", item: review.ReviewItem | None = None,
             keep_text=None):
        """Everything the screen shows for the current clip (`VIEW`); `message` goes to the status line."""
        state = self.state
        sess["seq"] += 1
        cid = _current(sess)
        if item is None and cid is not None:
            item = review.load_item(self.cat, cid, name)
        if item is not None:
            sess["version"] = item.review.version
        wav = spec = None
        if item is not None:
            try:
                wav, spec = page.media(state.ws, item.clip.id)
            except (OSError, ValueError) as exc:       # audio gone from disk: say so, keep reviewing
                message = f"{message}  \n⚠ cannot read this clip's audio ({exc})"
            page.prefetch(state.ws, sess["queue"][sess["pos"] + 1:sess["pos"] + 4])
        conflict = sess.get("conflict")
        # the history tables are the costliest outputs: filled only while their accordion is open
        changes_df, captions_df = page.history_tables(state, item) if sess.get("history_open") else (gr.skip(), gr.skip())
        text = keep_text if keep_text is not None else (item.caption.text if item and item.caption else "")
        return (sess, page.header_html(sess, item), page.player_html(wav), spec, page.teacher_md(item), text,
                "" if keep_text is None else gr.update(), message, page.counters_md(state, sess, name),
                gr.update(visible=True if conflict else "hidden"),
                page.conflict_md(conflict["versions"]) if conflict else "",
                changes_df, captions_df)

    def advance(self, sess: dict, name: str) -> None:
        """Move to the next clip still waiting (colleagues may have decided some meanwhile)."""
        sess["pos"] += 1
        while sess["scope"] == "todo" and sess["pos"] < len(sess["queue"]) and not review.still_todo(
                self.cat, sess["queue"][sess["pos"]], name):
            sess["pos"] += 1

    def whoami(self, saved: str, request: gr.Request):
        user = getattr(request, "username", None)
        if user:
            return gr.update(value=user, interactive=False, info="signed in")
        return gr.update(value=saved or "", interactive=True)

    def counters(self, sess: dict, name: str) -> str:
        return page.counters_md(self.state, sess, name)

    def load_queue(self, sess, name, order_key, scope_key, seed_value, progress=gr.Progress()):
        cat = self.cat
        sess = dict(sess, conflict=None, scope=scope_key)
        scores, note = None, ""
        if order_key == "disagreement":
            embedder = review.active_embedder(self.state.ws)
            if embedder is None:
                order_key, note = "low-confidence", "No student model is active yet: ordered by teacher confidence. "
            else:
                ids = [cid for cid in review.build_queue(cat, "pending", scope=scope_key, annotator=name)]
                scores = review.disagreement_scores(self.state.ws, ids, embedder,
                                                    progress=steps(progress, "student embeddings"))
        sess["queue"] = review.build_queue(cat, order_key, scope=scope_key, seed=int(seed_value or 0),
                                           annotator=name, scores=scores)
        sess["pos"] = 0
        return self.show(sess, name, f"{note}{len(sess['queue'])} clips in the queue.")

    # -- decisions --------------------------------------------------------------------------------
    def _act(self, kind: str, sess, name, text, why):
        cat = self.cat
        cid = _current(sess)
        if cid is None:
            return self.show(sess, name, "Nothing to review here: load the queue.")
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
            sess["conflict"] = _conflict_state(exc, cat)
            return self.show(sess, name, "⚠ Conflict: see both versions below.", keep_text=text)
        except ValueError as exc:
            return self.show(sess, name, f"⚠ {exc}", keep_text=text)
        sess["done"].append([cid, saved.review.version])
        sess["actions"] += 1
        self.advance(sess, name)
        return self.show(sess, name, f"✔ {saved.message}")

    def accept(self, sess, name, text, why):
        return self._act("accept", sess, name, text, why)

    def edit(self, sess, name, text, why):
        return self._act("edit", sess, name, text, why)

    def reject(self, sess, name, text, why):
        return self._act("reject", sess, name, text, why)

    def skip(self, sess, name, text, why):
        return self._act("skip", sess, name, text, why)

    def keep_mine(self, sess, name):
        c = sess.get("conflict")
        if not c:
            return self.show(sess, name, "No conflict to settle.")
        try:
            saved = review.decide(self.cat, review.Decision(**c["decision"]), c["theirs_version"])
        except review.ReviewConflict as exc:        # yet another save meanwhile: show the newest
            sess["conflict"] = _conflict_state(exc, self.cat)
            return self.show(sess, name, "⚠ Saved again by someone meanwhile: compare once more.")
        sess["conflict"] = None
        sess["done"].append([saved.review.clip_id, saved.review.version])
        sess["actions"] += 1
        self.advance(sess, name)
        return self.show(sess, name, f"✔ yours kept: {saved.message}")

    def keep_theirs(self, sess, name):
        sess["conflict"] = None
        return self.show(sess, name, "Kept theirs; your version was not saved (it is shown above until you move on).")

    def undo(self, sess, name):
        if not sess["done"]:
            return self.show(sess, name, "Nothing of yours to undo in this session.")
        cid, version = sess["done"][-1]
        try:
            saved = review.undo(self.cat, cid, (name or "").strip(), version)
        except review.ReviewConflict as exc:
            return self.show(sess, name, f"⚠ {exc}")
        except ValueError as exc:
            sess["done"].pop()
            return self.show(sess, name, f"⚠ {exc}")
        sess["done"].pop()
        sess["actions"] += 1
        if cid in sess["queue"]:
            sess["pos"] = sess["queue"].index(cid)
        else:
            sess["queue"].insert(sess["pos"], cid)
        return self.show(sess, name, f"↶ {saved.message}: clip {cid} is {saved.review.status} again")

    # -- moving around ----------------------------------------------------------------------------
    def _move(self, step: int, sess, name):
        sess["conflict"] = None
        sess["pos"] = min(max(sess["pos"] + step, 0), len(sess["queue"]))
        return self.show(sess, name, "" if _current(sess) is not None else "End of the queue.")

    def previous(self, sess, name):
        return self._move(-1, sess, name)

    def next(self, sess, name):
        return self._move(+1, sess, name)

    def open_clip(self, sess, name, clip_id):
        try:
            self.cat.get_clip(int(clip_id))
        except (KeyError, TypeError, ValueError):
            return self.show(sess, name, f"⚠ no clip {clip_id}")
        cid = int(clip_id)
        if cid not in sess["queue"]:
            sess["queue"].insert(min(sess["pos"], len(sess["queue"])), cid)
        sess["pos"] = sess["queue"].index(cid)
        sess["conflict"] = None
        return self.show(sess, name, f"Opened clip {cid}.")

    # -- history ----------------------------------------------------------------------------------
    def revert(self, sess, name, caption_id):
        cid = _current(sess)
        if cid is None or caption_id is None:
            return self.show(sess, name, "Open a clip and choose a caption id to revert to.")
        try:
            saved = review.revert(self.cat, cid, int(caption_id), (name or "").strip(), sess["version"])
        except review.ReviewConflict as exc:
            sess["conflict"] = _conflict_state(exc, self.cat)
            return self.show(sess, name, "⚠ Conflict: see both versions below.")
        except (KeyError, ValueError) as exc:
            return self.show(sess, name, f"⚠ {exc}")
        sess["done"].append([cid, saved.review.version])
        sess["actions"] += 1
        return self.show(sess, name, f"↩ reverted: {saved.message}")

    def revert_clicked(self, sess, name, evt: gr.SelectData):
        row = evt.row_value or []
        if evt.index is None or len(row) < 6 or evt.index[1] != 5 or row[5] != "↩ revert":
            return self.show(sess, name, "")        # a click elsewhere in the table does nothing
        return self.revert(sess, name, row[0])

    def history_opened(self, sess, name):
        sess["history_open"] = True
        return self.show(sess, name)

    def history_closed(self, sess, name):
        sess["history_open"] = False
        return (sess, *[gr.skip()] * (len(VIEW) - 1))

    # -- guidelines, bulk actions, overlap and agreement (leads) ----------------------------------
    def save_guidelines(self, text):
        md = review.set_guidelines(self.cat, text)
        return md, md

    def bulk_preview(self, sess, action, lo, hi, text, source, status_value):
        preview = review.preview_bulk(self.cat, action, _bulk_filter(text, source, status_value, lo, hi, action))
        sess["bulk"] = {"action": action, "targets": preview.targets}
        msg = (f"**{preview.count} clips** would be changed by “{review.BULK_ACTIONS[action]}”. "
               f"Nothing is changed until you apply; clips changed by someone after this preview are left alone.")
        return sess, msg, pd.DataFrame(preview.sample), gr.update(interactive=preview.count > 0)

    def bulk_apply(self, sess, name, why, progress=gr.Progress()):
        b = sess.get("bulk")
        if not b:
            return sess, "Preview first.", gr.update(interactive=False)
        preview = review.BulkPreview(b["action"], review.BulkFilter(), [tuple(t) for t in b["targets"]], [])
        try:
            result = review.apply_bulk(self.cat, preview, (name or "").strip(), reason=why or None,
                                       progress=steps(progress, "saving"))
        except ValueError as exc:
            return sess, f"⚠ {exc}", gr.update()
        sess["bulk"] = None
        return sess, "✔ " + result.summary(b["action"]), gr.update(interactive=False)

    def save_overlap(self, n):
        try:
            return f"Each clip now needs {review.set_overlap(self.cat, int(n or 1))} people."
        except ValueError as exc:
            return f"⚠ {exc}"

    def compute_agreement(self):
        return _agreement_view(review.agreement(self.cat))

    def resolve(self, name, clip_id, take, text):
        cat = self.cat
        try:
            cid = int(clip_id)
            saved = review.resolve(cat, cid, (name or "").strip(), cat.get_review(cid).version,
                                   take=(take or "").strip() or None, text=text)
        except review.ReviewConflict as exc:
            return f"⚠ {exc}; compute agreement again and retry"
        except (KeyError, TypeError, ValueError) as exc:
            return f"⚠ {exc}"
        return f"✔ clip {clip_id} resolved: {saved.review.status}"

    # -- export / import --------------------------------------------------------------------------
    def do_export(self, fmt_value, folder, statuses, progress=gr.Progress()):
        ws = self.state.ws
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(folder).expanduser() if folder and folder.strip() else ws.root / "exports" / \
            f"{stamp}-{fmt_value}"
        try:
            report = export(ws, out, fmt_value, statuses=statuses or None,
                            progress=reporter(progress))
        except (FileExistsError, ValueError) as exc:
            return f"⚠ {exc}", None
        return "✔ " + report.summary(), download_zip(out)

    def do_import(self, folder, upload, request: gr.Request, progress=gr.Progress()):
        # The signed-in person authors what is restored; only an admin keeps the export's own names.
        state = self.state
        policy = getattr(self.root, "hearsay_policy", None) or access.load_policy(state.settings)
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


# -- the tab ----------------------------------------------------------------------------------------

def build(state: AppState) -> None:
    cat = state.ws.catalog
    c = SimpleNamespace(session=gr.State(new_session()),
                        remembered=gr.BrowserState("", storage_key="hearsay-annotator", secret=BROWSER_STATE_KEY))
    page.queue_controls(c)
    page.clip_panel(c)
    page.history_section(c)
    page.bulk_section(c, cat)
    page.agreement_section(c, cat)
    page.export_section(c)
    ev = ReviewEvents(state, Context.root_block)
    _wire(c, ev, cat)


def _wire(c: SimpleNamespace, ev: ReviewEvents, cat) -> None:
    """Every event has an api_name; False where it only serves the page."""
    view = [getattr(c, name) for name in VIEW]
    who = [c.session, c.annotator]
    act_inputs = [*who, c.caption, c.reason]
    queue_inputs = [*who, c.order, c.scope, c.seed]
    if ev.root is not None:
        ev.root.load(lambda: (review.guidelines(cat),) * 2, None, [c.guide_md, c.guide_edit], api_name=False)
        ev.root.load(ev.whoami, [c.remembered], [c.annotator], api_name=False).then(
            ev.load_queue, queue_inputs, view, api_name=False, **one_bar(c.status))
    c.annotator.change(lambda name: name, [c.annotator], [c.remembered], api_name=False)
    # The stored name arrives when the tab mounts (BrowserState then fires change); a signed-in name wins.
    c.remembered.change(lambda saved, name: gr.skip() if (name or not saved) else saved,
                        [c.remembered, c.annotator], [c.annotator], api_name=False)
    c.load_btn.click(ev.load_queue, queue_inputs, view, api_name="review_load_queue", **one_bar(c.status))
    c.accept_btn.click(ev.accept, act_inputs, view, api_name="review_accept")
    c.save_btn.click(ev.edit, act_inputs, view, api_name="review_edit")
    c.reject_btn.click(ev.reject, act_inputs, view, api_name="review_reject")
    c.skip_btn.click(ev.skip, act_inputs, view, api_name="review_skip")
    c.undo_btn.click(ev.undo, who, view, api_name="review_undo")
    c.prev_btn.click(ev.previous, who, view, api_name="review_previous")
    c.next_btn.click(ev.next, who, view, api_name="review_next")
    c.open_btn.click(ev.open_clip, [*who, c.open_id], view, api_name="review_open")
    c.mine_btn.click(ev.keep_mine, who, view, api_name="review_keep_mine")
    c.theirs_btn.click(ev.keep_theirs, who, view, api_name="review_keep_theirs")
    c.revert_btn.click(ev.revert, [*who, c.revert_id], view, api_name="review_revert")
    c.caption_list.select(ev.revert_clicked, who, view, api_name=False)
    c.history_box.expand(ev.history_opened, who, view, api_name="review_history")
    c.history_box.collapse(ev.history_closed, who, view, api_name=False)
    c.guide_btn.click(ev.save_guidelines, [c.guide_edit], [c.guide_md, c.guide_edit],
                      api_name="review_save_guidelines")
    c.bulk_preview_btn.click(ev.bulk_preview, [c.session, c.bulk_action, c.bulk_min, c.bulk_max, c.bulk_text,
                                               c.bulk_source, c.bulk_status],
                             [c.session, c.bulk_msg, c.bulk_table, c.bulk_apply_btn], api_name="review_bulk_preview")
    c.bulk_apply_btn.click(ev.bulk_apply, [*who, c.bulk_reason], [c.session, c.bulk_msg, c.bulk_apply_btn],
                           api_name="review_bulk_apply", **one_bar(c.bulk_msg)).then(
        ev.counters, who, [c.counters], api_name=False)
    c.overlap_btn.click(ev.save_overlap, [c.overlap_n], [c.agree_md], api_name="review_set_overlap")
    c.agree_btn.click(ev.compute_agreement, None, [c.agree_md, c.agree_table], api_name="review_agreement")
    c.resolve_btn.click(ev.resolve, [c.annotator, c.resolve_id, c.resolve_take, c.resolve_text], [c.agree_md],
                        api_name="review_resolve")
    c.export_btn.click(ev.do_export, [c.fmt, c.export_dir, c.export_status], [c.port_msg, c.export_file],
                       api_name="review_export", **one_bar(c.port_msg))
    c.import_btn.click(ev.do_import, [c.import_dir, c.import_zip], [c.port_msg], api_name="review_import")
