"""Library tab: import audio, browse recordings and clips, listen, look, delete."""
from __future__ import annotations

import threading

import gradio as gr
import pandas as pd

from core.catalog import REVIEW_STATUSES, ClipQuery
from core.importer import AUDIO_EXTENSIONS, delete_clips, import_paths
from ui.state import AppState

PAGE_SIZE = 25
COLUMNS = ["clip", "file", "source", "start", "end", "status", "caption", "label"]
ALL = "(all)"

# One cancel flag per browser session: a running import checks it between files.
_cancel_flags: dict[str, threading.Event] = {}


def cancel_flag(request: gr.Request | None) -> threading.Event:
    key = getattr(request, "session_hash", None) or "cli"
    return _cancel_flags.setdefault(key, threading.Event())


def stats_markdown(state: AppState) -> str:
    s = state.ws.catalog.stats()
    return (f"**{s.recordings}** recordings · **{s.clips}** clips · **{s.hours * 60:.1f}** min · "
            f"**{s.captioned}** captioned · **{s.reviewed}** reviewed")


def clip_table(state: AppState, text: str = "", source: str = ALL, status: str = ALL,
               page: int = 1) -> tuple[pd.DataFrame, str]:
    page = max(1, int(page or 1))
    query = ClipQuery(text=text or "", source=None if source in (None, ALL) else source,
                      status=None if status in (None, ALL) else status,
                      limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    rows, total = state.ws.catalog.clip_rows(query)
    frame = pd.DataFrame([{
        "clip": r.clip.id, "file": r.recording.original_name, "source": r.recording.source,
        "start": r.clip.start, "end": r.clip.end, "status": r.review.status,
        "caption": r.caption.text if r.caption else "", "label": r.recording.meta.get("label", ""),
    } for r in rows], columns=COLUMNS)
    pages = max(1, -(-total // PAGE_SIZE))
    return frame, f"page {min(page, pages)} of {pages} · {total} clips match"


def clip_details(state: AppState, clip_id: int) -> tuple[str, str, dict]:
    """(wav path for the player, spectrogram png path, details) of one clip."""
    ws = state.ws
    clip = ws.catalog.get_clip(int(clip_id))
    rec = ws.catalog.get_recording(clip.recording_id)
    captions = ws.catalog.captions(clip.id)
    details = {"clip": clip.id, "recording": rec.original_name, "source": rec.source,
               "start": clip.start, "end": clip.end, "recording duration": rec.duration,
               "original sample rate": rec.sample_rate, "metadata": rec.meta,
               "review": ws.catalog.get_review(clip.id).status,
               "captions": [{"text": c.text, "origin": c.origin, "teacher": c.teacher, "annotator": c.annotator,
                             "created": c.created} for c in captions]}
    return str(ws.clip_wav_path(clip)), str(ws.spectrogram_path(clip)), details


def build(state: AppState) -> None:
    stats = gr.Markdown(stats_markdown(state))
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### Import\nAudio files (wav, flac, ogg, mp3, …) or zips; a `meta.csv` beside the audio "
                        "(`filename` + any columns) becomes metadata. Long recordings are cut into "
                        f"{state.settings.window_seconds:g} s windows overlapping by {state.settings.overlap_seconds:g} s.")
            files = gr.File(label="Upload files or zips", file_count="multiple",
                            file_types=sorted(AUDIO_EXTENSIONS | {".zip", ".csv"}))
            folder = gr.Textbox(label="…or a folder on the server", placeholder="/path/to/audio")
            with gr.Row():
                import_btn = gr.Button("Import", variant="primary")
                cancel_btn = gr.Button("Cancel")
            report = gr.Dataframe(label="Import report", headers=["file", "status", "message"],
                                  interactive=False, wrap=True, max_height=260)
        with gr.Column(scale=2):
            with gr.Row():
                text = gr.Textbox(label="Filter", placeholder="file name or caption contains…", scale=2)
                source = gr.Dropdown(label="Source", choices=[ALL] + state.ws.catalog.sources(), value=ALL,
                                     allow_custom_value=True)
                status = gr.Dropdown(label="Review status", choices=[ALL, "uncaptioned", *REVIEW_STATUSES],
                                     value=ALL)
            table = gr.Dataframe(value=clip_table(state)[0], interactive=False, wrap=True, max_height=420,
                                 column_widths=["7%", "25%", "12%", "7%", "7%", "9%", "23%", "10%"])
            with gr.Row():
                prev_btn = gr.Button("◀ Previous", size="sm")
                page = gr.Number(value=1, label="Page", precision=0, minimum=1, scale=0)
                next_btn = gr.Button("Next ▶", size="sm")
                page_info = gr.Markdown(clip_table(state)[1])
    with gr.Row():
        with gr.Column():
            selected = gr.Number(label="Selected clip (click a row, or type an id)", precision=0, value=None,
                                 interactive=True)
            player = gr.Audio(label="Clip", type="filepath", interactive=False)
            spectrogram = gr.Image(label="Spectrogram", type="filepath", interactive=False)
        with gr.Column():
            details = gr.JSON(label="Details")
            delete_btn = gr.Button("Delete this clip…", variant="stop")
            with gr.Row(visible=False) as confirm_row:
                gr.Markdown("Delete the clip with its captions and reviews? This cannot be undone.")
                confirm_btn = gr.Button("Yes, delete", variant="stop")
                keep_btn = gr.Button("Keep it")
            delete_msg = gr.Markdown()

    filters = [text, source, status, page]

    def do_import(uploads, folder_path, request: gr.Request, progress=gr.Progress()):
        paths = [getattr(f, "name", f) for f in (uploads or [])]
        if folder_path and folder_path.strip():
            paths.append(folder_path.strip())
        if not paths:
            raise gr.Error("Choose files or a zip to upload, or type a folder path on the server.")
        flag = cancel_flag(request)
        flag.clear()
        rep = import_paths(state.ws, paths, cancel=flag,
                           progress=lambda done, total, name: progress((done, max(total, 1)), desc=name))
        frame = pd.DataFrame([{"file": r.name, "status": r.status, "message": r.message} for r in rep.results],
                             columns=["file", "status", "message"])
        gr.Info(rep.summary())
        return frame, stats_markdown(state), gr.update(choices=[ALL] + state.ws.catalog.sources())

    def do_cancel(request: gr.Request):
        cancel_flag(request).set()
        return "Cancelling after the current file…"

    def refresh(text_v, source_v, status_v, page_v):
        frame, info = clip_table(state, text_v, source_v, status_v, page_v)
        return frame, info

    def turn(delta):
        def go(text_v, source_v, status_v, page_v):
            new = max(1, int(page_v or 1) + delta)
            frame, info = clip_table(state, text_v, source_v, status_v, new)
            return new, frame, info
        return go

    def on_select(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return int(frame.iloc[row]["clip"])

    def show(clip_id):
        if clip_id is None:
            return None, None, None, gr.update(visible=False)
        try:
            wav, png, info = clip_details(state, int(clip_id))
        except KeyError:
            raise gr.Error(f"No clip {int(clip_id)}.")
        return wav, png, info, gr.update(visible=False)

    def do_delete(clip_id, text_v, source_v, status_v, page_v):
        if clip_id is None:
            raise gr.Error("Select a clip first.")
        delete_clips(state.ws, [int(clip_id)])
        frame, info = clip_table(state, text_v, source_v, status_v, page_v)
        return (f"Deleted clip {int(clip_id)}.", gr.update(visible=False), frame, info, stats_markdown(state),
                None, None, None, None)

    imp = import_btn.click(do_import, [files, folder], [report, stats, source], api_name="library_import",
                           concurrency_limit=1)
    imp.then(refresh, filters, [table, page_info], api_name=False)
    cancel_btn.click(do_cancel, None, [delete_msg], api_name="library_cancel_import", queue=False)
    for comp in (text, source, status):
        comp.change(lambda *v: (1, *refresh(*v[:3], 1)), filters, [page, table, page_info], api_name=False)
    page.submit(refresh, filters, [table, page_info], api_name="library_table")
    prev_btn.click(turn(-1), filters, [page, table, page_info], api_name=False)
    next_btn.click(turn(+1), filters, [page, table, page_info], api_name=False)
    table.select(on_select, [table], [selected], api_name=False)
    selected.change(show, [selected], [player, spectrogram, details, confirm_row], api_name="library_clip")
    delete_btn.click(lambda: gr.update(visible=True), None, [confirm_row], api_name=False)
    keep_btn.click(lambda: gr.update(visible=False), None, [confirm_row], api_name=False)
    confirm_btn.click(do_delete, [selected, *filters],
                      [delete_msg, confirm_row, table, page_info, stats, selected, player, spectrogram, details],
                      api_name="library_delete")
    # Fresh numbers whenever a page opens (the demo may still be importing, another tab may have changed things).
    root = gr.context.Context.root_block
    if root is not None:
        root.load(lambda *v: (*refresh(*v), stats_markdown(state), gr.update(choices=[ALL] + state.ws.catalog.sources())),
                  filters, [table, page_info, stats, source], api_name=False)
    gr.Button("Refresh", size="sm").click(lambda *v: (*refresh(*v), stats_markdown(state)), filters,
                                          [table, page_info, stats], api_name="library_refresh")
