"""Captions tab: caption clips with a teacher, watch progress, cancel, browse captions beside a player,
re-caption one clip with another teacher or prompt, and see every version a clip has had."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from core.pipeline.captioning import (CAPTION_COLUMNS, VERSION_COLUMNS, caption_rows, caption_selection, caption_versions,
                             failure_rows)
from core.store.catalog import ClipQuery
from core.models.teachers import default_prompt, teacher_names
from ui.jobs import SessionJobs
from ui.progress import one_bar, reporter
from ui.state import AppState

PAGE_SIZE = 25
ALL = "(all)"
SELECTIONS = {"clips without a caption from this teacher": "uncaptioned",
              "all clips (cached ones cost nothing)": "all",
              "clips matching the filter below": "filter"}
FAILURE_COLUMNS = ["clip", "teacher", "error", "when"]

# A running batch checks its session's cancel flag between batches.
BATCHES = SessionJobs()


def _query(text: str, source: str, page: int = 1) -> ClipQuery:
    return ClipQuery(text=text or "", source=None if source in (None, "", ALL) else source,
                     limit=PAGE_SIZE, offset=(max(1, int(page or 1)) - 1) * PAGE_SIZE)


def table(state: AppState, text: str = "", source: str = ALL, page: int = 1) -> tuple[pd.DataFrame, str]:
    rows, total = caption_rows(state.ws, _query(text, source, page))
    pages = max(1, -(-total // PAGE_SIZE))
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS), f"page {min(int(page or 1), pages)} of {pages} · {total} clips"


def failures(state: AppState) -> pd.DataFrame:
    return pd.DataFrame(failure_rows(state.ws, 50), columns=FAILURE_COLUMNS)


class CaptionsEvents:
    """The Captions tab's event handlers: the values the page sends in, what it shows out."""

    def __init__(self, state: AppState):
        self.state = state

    def prompt_for(self, name):
        return default_prompt(name, self.state.settings)

    def run(self, name, prompt_text, chosen, text_v, source_v, limit_v, force_v, request: gr.Request,
            progress=gr.Progress()):
        state = self.state
        query = _query(text_v, source_v)
        query.limit = 10 ** 9
        with BATCHES.running(request) as flag:
            report = caption_selection(
                state.ws, name, prompt=_prompt_arg(name, prompt_text), selection=SELECTIONS.get(chosen, "uncaptioned"),
                query=query, limit=int(limit_v or 0) or None, force=bool(force_v), cancel=flag,
                progress=reporter(progress))
        frame_v, info_v = table(state, text_v, source_v, 1)
        return f"**{report.summary()}**", failures(state), frame_v, info_v, 1

    def cancel(self, request: gr.Request):
        BATCHES.cancel(request)
        return "Cancelling after the current batch… run again to continue where it stopped."

    def refresh(self, text_v, source_v, page_v):
        return table(self.state, text_v, source_v, page_v)

    def fill(self, text_v, source_v, page_v):
        return (*self.refresh(text_v, source_v, page_v), failures(self.state))

    def on_select(self, frame_v: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return int(frame_v.iloc[row]["clip"])

    def show(self, clip_id):
        if clip_id is None:
            return None, pd.DataFrame(columns=VERSION_COLUMNS)
        try:
            wav = str(self.state.ws.clip_wav_path(int(clip_id)))
        except KeyError:
            raise gr.Error(f"No clip {int(clip_id)}.")
        return wav, pd.DataFrame(caption_versions(self.state.ws, int(clip_id)), columns=VERSION_COLUMNS)

    def recaption(self, clip_id, name, prompt_text, text_v, source_v, page_v):
        state = self.state
        if clip_id is None:
            raise gr.Error("Select a clip first.")
        report = caption_selection(state.ws, name, prompt=_prompt_arg(name, prompt_text),
                                   selection=[int(clip_id)], force=True)
        if report.failures:
            gr.Warning(f"Clip {int(clip_id)} failed: {report.failures[0][1]}")
        frame_v, info_v = table(state, text_v, source_v, page_v)
        return (pd.DataFrame(caption_versions(state.ws, int(clip_id)), columns=VERSION_COLUMNS), frame_v, info_v,
                failures(state))


# -- the tab: layout in sections (each adds its components to `c`), then the wiring ------------------

def _run_column(c: SimpleNamespace, state: AppState) -> None:
    with gr.Column(scale=1):
        c.teacher = gr.Dropdown(teacher_names(), value=state.settings.teacher, label="Teacher")
        c.prompt = gr.Textbox(label="Prompt (LLM teachers)", lines=3,
                              value=state.settings.teacher_prompt or default_prompt(state.settings.teacher,
                                                                                    state.settings),
                              placeholder="the embedded teacher needs no prompt")
        c.selection = gr.Radio(list(SELECTIONS), value=next(iter(SELECTIONS)), label="Which clips")
        c.limit = gr.Number(value=0, precision=0, minimum=0, label="At most this many clips (0: no limit)")
        c.force = gr.Checkbox(label="Re-caption even where a cached caption exists (adds a version)")
        with gr.Row():
            c.run_btn = gr.Button("Caption", variant="primary")
            c.cancel_btn = gr.Button("Cancel")
        c.status = gr.Markdown()
        # tables start empty and fill when an annotator's page loads: build-time values are in /config
        c.fail_table = gr.Dataframe(value=pd.DataFrame(columns=FAILURE_COLUMNS), label="Recent failures",
                                    interactive=False, wrap=True, max_height=200)


def _table_column(c: SimpleNamespace, state: AppState) -> None:
    with gr.Column(scale=2):
        with gr.Row():
            c.text = gr.Textbox(label="Filter", placeholder="file name or caption contains…", scale=2)
            c.source = gr.Dropdown([ALL] + state.ws.catalog.sources(), value=ALL, label="Source",
                                   allow_custom_value=True)
        c.captions = gr.Dataframe(value=pd.DataFrame(columns=CAPTION_COLUMNS), interactive=False, wrap=True,
                                  max_height=420, column_widths=["6%", "20%", "6%", "6%", "40%", "10%", "7%", "5%"])
        with gr.Row():
            c.page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=0)
            c.page_info = gr.Markdown()
            c.refresh_btn = gr.Button("Refresh", size="sm")


def _clip_row(c: SimpleNamespace) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            c.selected = gr.Number(label="Selected clip (click a row, or type an id)", precision=0, value=None,
                                   placeholder="none selected")
            c.player = gr.Audio(label="Clip", type="filepath", interactive=False)
            c.recaption_btn = gr.Button("Re-caption this clip with the teacher and prompt above")
        with gr.Column(scale=2):
            c.versions = gr.Dataframe(headers=VERSION_COLUMNS, label="Every caption of this clip, newest first",
                                      interactive=False, wrap=True, max_height=300)


def build(state: AppState) -> None:
    gr.Markdown("Captions come from a **teacher**: `embedded` runs offline on a CPU (sound events + speech + "
                "acoustic descriptors); `transformers` runs an audio LLM such as Qwen2-Audio on a GPU; "
                "`openai-compatible` calls a chat-completions endpoint (key from the environment). "
                "Captions are cached by clip, teacher and prompt, and every version is kept.")
    c = SimpleNamespace()
    with gr.Row():
        _run_column(c, state)
        _table_column(c, state)
    _clip_row(c)
    ev = CaptionsEvents(state)
    filters = [c.text, c.source, c.page]
    tables = [c.captions, c.page_info, c.fail_table]

    c.teacher.change(ev.prompt_for, [c.teacher], [c.prompt], api_name="captions_default_prompt")
    c.run_btn.click(ev.run, [c.teacher, c.prompt, c.selection, c.text, c.source, c.limit, c.force],
                    [c.status, c.fail_table, c.captions, c.page_info, c.page], api_name="captions_run",
                    concurrency_limit=1, **one_bar(c.status))
    c.cancel_btn.click(ev.cancel, None, [c.status], api_name="captions_cancel", queue=False)
    for comp in (c.text, c.source):
        comp.change(lambda *v: (1, *ev.refresh(v[0], v[1], 1)), filters, [c.page, c.captions, c.page_info],
                    api_name=False)
    c.page.submit(ev.refresh, filters, [c.captions, c.page_info], api_name="captions_table")
    c.refresh_btn.click(ev.fill, filters, tables, api_name="captions_refresh")
    root = gr.context.Context.root_block
    if root is not None:
        root.load(ev.fill, filters, tables, api_name=False)
    c.captions.select(ev.on_select, [c.captions], [c.selected], api_name=False)
    c.selected.change(ev.show, [c.selected], [c.player, c.versions], api_name="captions_clip")
    c.recaption_btn.click(ev.recaption, [c.selected, c.teacher, c.prompt, *filters],
                          [c.versions, c.captions, c.page_info, c.fail_table],
                          api_name="captions_recaption", concurrency_limit=1, **one_bar(c.versions))


def _prompt_arg(name: str, prompt_text: str | None) -> str | None:
    """None means the backend's default prompt (also for the embedded teacher, which has none)."""
    text = (prompt_text or "").strip()
    return text if text and name != "embedded" else None
