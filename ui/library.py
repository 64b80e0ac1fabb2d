"""Library tab: import audio, browse recordings and clips, listen, look, delete.

Visitors get it read-only: the import column and the delete controls are not there for them (hidden on
page load; where roles exist they start hidden), so no button they see can fail."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from core.auth import published
from core.auth.access import ADMIN, ANNOTATOR, allows
from core.store.catalog import REVIEW_STATUSES, ClipQuery
from core.pipeline.importer import AUDIO_EXTENSIONS, delete_clips, import_paths
from ui.jobs import SessionJobs
from ui.progress import one_bar, reporter
from ui.state import AppState

PAGE_SIZE = 25
COLUMNS = published.PRIVATE_COLUMNS
ALL = "(all)"

# A running import checks its session's cancel flag between files.
IMPORTS = SessionJobs()


def stats_markdown(state: AppState) -> str:
    s = state.ws.catalog.stats()
    return (f"**{s.recordings}** recordings · **{s.clips}** clips · **{s.hours * 60:.1f}** min · "
            f"**{s.captioned}** captioned · **{s.reviewed}** reviewed")


def clip_table(state: AppState, text: str = "", source: str = ALL, status: str = ALL,
               page: int = 1, role: str = ADMIN) -> tuple[pd.DataFrame, str]:
    """A page of clips as `role` may read it (core/auth/published.py: visitors get published captions only)."""
    page = max(1, int(page or 1))
    query = ClipQuery(text=text or "", source=None if source in (None, ALL) else source,
                      status=None if status in (None, ALL) else status,
                      limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    rows, total = published.clip_rows(state.ws, query, role)
    columns = COLUMNS if published.reads_private(role) else published.PUBLIC_COLUMNS
    pages = max(1, -(-total // PAGE_SIZE))
    return pd.DataFrame(rows, columns=columns), f"page {min(page, pages)} of {pages} · {total} clips match"


def clip_details(state: AppState, clip_id: int, role: str = ADMIN) -> tuple[str, str, dict]:
    """(wav path for the player, spectrogram png path, details as `role` may read them) of one clip."""
    details = published.clip_record(state.ws, int(clip_id), role)
    return str(state.ws.clip_wav_path(int(clip_id))), str(state.ws.spectrogram_path(int(clip_id))), details


def selected_id(value) -> int | None:
    """The clip id in the id box, or None when it is empty (0 and blanks are 'nothing selected')."""
    try:
        clip_id = int(value)
    except (TypeError, ValueError):
        return None
    return clip_id if clip_id > 0 else None


def editor_controls(role: str) -> tuple[bool, bool]:
    """(may import, may delete) for a role: what the Library shows it."""
    return allows(role, ANNOTATOR), allows(role, ADMIN)


class LibraryEvents:
    """The Library tab's event handlers: the values the page sends in, what it shows out."""

    def __init__(self, state: AppState):
        self.state = state

    def do_import(self, uploads, folder_path, request: gr.Request, progress=gr.Progress()):
        state = self.state
        paths = [getattr(f, "name", f) for f in (uploads or [])]
        if folder_path and folder_path.strip():
            paths.append(folder_path.strip())
        if not paths:
            raise gr.Error("Choose files or a zip to upload, or type a folder path on the server.")
        with IMPORTS.running(request) as flag:
            rep = import_paths(state.ws, paths, cancel=flag,
                               progress=reporter(progress, unit="files"))
        frame = pd.DataFrame([{"file": r.name, "status": r.status, "message": r.message} for r in rep.results],
                             columns=["file", "status", "message"])
        gr.Info(rep.summary())
        return frame, stats_markdown(state), gr.update(choices=[ALL] + state.ws.catalog.sources())

    def do_cancel(self, request: gr.Request):
        IMPORTS.cancel(request)
        return "Cancelling after the current file…"

    def refresh(self, text_v, source_v, status_v, page_v, request: gr.Request):
        return clip_table(self.state, text_v, source_v, status_v, page_v, self.state.role(request))

    def refilter(self, text_v, source_v, status_v, page_v, request: gr.Request):
        return 1, *clip_table(self.state, text_v, source_v, status_v, 1, self.state.role(request))

    def _turn(self, delta, text_v, source_v, status_v, page_v, request):
        new = max(1, int(page_v or 1) + delta)
        return new, *clip_table(self.state, text_v, source_v, status_v, new, self.state.role(request))

    def prev_page(self, text_v, source_v, status_v, page_v, request: gr.Request):
        return self._turn(-1, text_v, source_v, status_v, page_v, request)

    def next_page(self, text_v, source_v, status_v, page_v, request: gr.Request):
        return self._turn(+1, text_v, source_v, status_v, page_v, request)

    def refresh_all(self, text_v, source_v, status_v, page_v, request: gr.Request):
        return (*self.refresh(text_v, source_v, status_v, page_v, request), stats_markdown(self.state))

    def on_load(self, text_v, source_v, status_v, page_v, request: gr.Request):
        """Fresh numbers whenever a page opens (the demo may still be importing, another tab may have
        changed things); the status filter only for those who may read review statuses, the import
        column and the delete button only for those who may use them."""
        role = self.state.role(request)
        may_import, may_delete = editor_controls(role)
        return (*self.refresh_all(text_v, source_v, status_v, page_v, request),
                gr.update(choices=[ALL] + self.state.ws.catalog.sources()),
                gr.update(visible=published.reads_private(role)),
                gr.update(visible=may_import), gr.update(visible=may_delete))

    def on_select(self, frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return str(int(frame.iloc[row]["clip"]))

    def show(self, clip_text, request: gr.Request):
        clip_id = selected_id(clip_text)
        if clip_id is None:
            return None, None, None, gr.update(visible=False)
        try:
            wav, png, info = clip_details(self.state, clip_id, self.state.role(request))
        except KeyError:
            raise gr.Error(f"There is no clip {clip_id}: click a row of the table to pick one.")
        return wav, png, info, gr.update(visible=False)

    def do_delete(self, clip_text, text_v, source_v, status_v, page_v, request: gr.Request):
        state = self.state
        clip_id = selected_id(clip_text)
        if clip_id is None:
            gr.Warning("No clip is selected, so nothing was deleted: click a row first.")
            return ("", gr.update(visible=False), *(gr.skip() for _ in range(7)))
        try:
            state.ws.catalog.get_clip(clip_id)
        except KeyError:
            gr.Warning(f"There is no clip {clip_id}, so nothing was deleted.")
            return ("", gr.update(visible=False), *(gr.skip() for _ in range(7)))
        delete_clips(state.ws, [clip_id])
        frame, info = self.refresh(text_v, source_v, status_v, page_v, request)
        return (f"Deleted clip {clip_id}.", gr.update(visible=False), frame, info, stats_markdown(state),
                "", None, None, None)


# -- the tab: layout in sections (each adds its components to `c`), then the wiring ------------------

def _import_column(c: SimpleNamespace, state: AppState, open_to_all: bool) -> None:
    with gr.Column(scale=1, visible=open_to_all) as c.import_column:
        gr.Markdown("### Import\nAudio files (wav, flac, ogg, mp3, …) or zips; a `meta.csv` beside the audio "
                    "(`filename` + any columns) becomes metadata. Long recordings are cut into "
                    f"{state.settings.window_seconds:g} s windows overlapping by {state.settings.overlap_seconds:g} s.")
        c.files = gr.File(label="Upload files or zips", file_count="multiple",
                          file_types=sorted(AUDIO_EXTENSIONS | {".zip", ".csv"}))
        c.folder = gr.Textbox(label="…or a folder on the server", placeholder="/path/to/audio")
        with gr.Row():
            c.import_btn = gr.Button("Import", variant="primary")
            c.cancel_btn = gr.Button("Cancel")
        c.report = gr.Dataframe(label="Import report", headers=["file", "status", "message"],
                                interactive=False, wrap=True, max_height=260)


def _browser(c: SimpleNamespace, state: AppState) -> None:
    with gr.Column(scale=2):
        with gr.Row():
            c.text = gr.Textbox(label="Filter", placeholder="file name or caption contains…", scale=2)
            c.source = gr.Dropdown(label="Source", choices=[ALL] + state.ws.catalog.sources(), value=ALL,
                                   allow_custom_value=True)
            c.status = gr.Dropdown(label="Review status", choices=[ALL, "uncaptioned", *REVIEW_STATUSES],
                                   value=ALL)
        # empty until the page loads: the build-time value is in /config, served to anyone
        c.table = gr.Dataframe(value=pd.DataFrame(columns=published.PUBLIC_COLUMNS), interactive=False, wrap=True,
                               max_height=420)
        with gr.Row():
            c.prev_btn = gr.Button("◀ Previous", size="sm")
            c.page = gr.Number(value=1, label="Page", precision=0, minimum=1, scale=0)
            c.next_btn = gr.Button("Next ▶", size="sm")
            c.page_info = gr.Markdown()


def _clip_view(c: SimpleNamespace, open_to_all: bool) -> None:
    with gr.Row():
        with gr.Column():
            # a textbox, not a number box: nothing selected reads as empty, never as clip 0
            c.selected = gr.Textbox(label="Selected clip (click a row, or type an id)", value="",
                                    placeholder="no clip selected", max_lines=1, interactive=True)
            c.player = gr.Audio(label="Clip", type="filepath", interactive=False)
            c.spectrogram = gr.Image(label="Spectrogram", type="filepath", interactive=False)
        with gr.Column():
            c.details = gr.JSON(label="Details")
            c.delete_btn = gr.Button("Delete this clip…", variant="stop", visible=open_to_all)
            with gr.Row(visible=False) as c.confirm_row:
                gr.Markdown("Delete the clip with its captions and reviews? This cannot be undone.")
                c.confirm_btn = gr.Button("Yes, delete", variant="stop")
                c.keep_btn = gr.Button("Keep it")
            c.delete_msg = gr.Markdown()


def build(state: AppState) -> None:
    open_to_all = not state.policy.enabled         # one person on their machine: everything shows at once
    c = SimpleNamespace(stats=gr.Markdown(stats_markdown(state)))
    with gr.Row():
        _import_column(c, state, open_to_all)
        _browser(c, state)
    _clip_view(c, open_to_all)
    ev = LibraryEvents(state)
    filters = [c.text, c.source, c.status, c.page]
    listing = [c.page, c.table, c.page_info]

    imp = c.import_btn.click(ev.do_import, [c.files, c.folder], [c.report, c.stats, c.source],
                             api_name="library_import", concurrency_limit=1, **one_bar(c.report))
    imp.then(ev.refresh, filters, [c.table, c.page_info], api_name=False)
    c.cancel_btn.click(ev.do_cancel, None, [c.delete_msg], api_name="library_cancel_import", queue=False)
    for comp in (c.text, c.source, c.status):
        comp.change(ev.refilter, filters, listing, api_name=False)
    c.page.submit(ev.refresh, filters, [c.table, c.page_info], api_name="library_table")
    c.prev_btn.click(ev.prev_page, filters, listing, api_name=False)
    c.next_btn.click(ev.next_page, filters, listing, api_name=False)
    c.table.select(ev.on_select, [c.table], [c.selected], api_name=False)
    c.selected.change(ev.show, [c.selected], [c.player, c.spectrogram, c.details, c.confirm_row],
                      api_name="library_clip")
    c.delete_btn.click(lambda: gr.update(visible=True), None, [c.confirm_row], api_name=False)
    c.keep_btn.click(lambda: gr.update(visible=False), None, [c.confirm_row], api_name=False)
    c.confirm_btn.click(ev.do_delete, [c.selected, *filters],
                        [c.delete_msg, c.confirm_row, c.table, c.page_info, c.stats, c.selected, c.player,
                         c.spectrogram, c.details], api_name="library_delete")
    root = gr.context.Context.root_block
    if root is not None:
        root.load(ev.on_load, filters, [c.table, c.page_info, c.stats, c.source, c.status, c.import_column,
                                        c.delete_btn], api_name=False)
    gr.Button("Refresh", size="sm").click(ev.refresh_all, filters, [c.table, c.page_info, c.stats],
                                          api_name="library_refresh")
