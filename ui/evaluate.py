"""Evaluate tab: compare models on a labelled folder or the workspace's labelled clips.

Every event calls one `training.evaluate` function; this module only turns results into
tables and plotly figures.
"""
from __future__ import annotations

import threading

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from training import evaluate as ev
from ui.progress import one_bar, reporter
from ui.state import AppState

WORKSPACE_SOURCE = "workspace labelled clips"
FOLDER_SOURCE = "folder"
METRIC_LABELS = {"zero_shot_acc": "zero-shot acc", "t2a_r1": "t2a R@1", "t2a_r5": "t2a R@5", "t2a_r10": "t2a R@10",
                 "a2t_r1": "a2t R@1", "a2t_r5": "a2t R@5", "a2t_r10": "a2t R@10", "map10": "mAP@10"}

_cancel_events: dict[str, threading.Event] = {}     # session → its running evaluation's stop flag


def results_table(results: list[dict]) -> pd.DataFrame:
    cols = ["model", "clips", *METRIC_LABELS, "seconds"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in results], columns=cols)


def metrics_chart(results: list[dict]) -> go.Figure:
    fig = go.Figure()
    for r in results:
        keys = [k for k in METRIC_LABELS if r.get(k) is not None]
        fig.add_bar(name=r["model"], x=[METRIC_LABELS[k] for k in keys], y=[r[k] for k in keys])
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="score"), height=360,
                      margin=dict(l=40, r=10, t=30, b=40), legend_title_text="model")
    return fig


def per_class_table(results: list[dict]) -> pd.DataFrame:
    classes = sorted({c for r in results for c in r.get("per_class_acc", {})})
    return pd.DataFrame([{"class": c, **{r["model"]: r["per_class_acc"].get(c) for r in results}} for c in classes],
                        columns=["class", *[r["model"] for r in results]])


def confusion_figure(result: dict | None) -> go.Figure:
    fig = go.Figure()
    if result and result.get("confusion"):
        classes = result["classes"]
        fig.add_heatmap(z=result["confusion"], x=classes, y=classes, colorscale="Blues",
                        hovertemplate="true %{y}<br>predicted %{x}<br>%{z} clips<extra></extra>")
        fig.update_layout(title=f"confusion matrix: {result['model']}", xaxis_title="predicted",
                          yaxis=dict(title="true", autorange="reversed"),
                          height=max(360, 18 * len(classes) + 160))
    return fig


def history_table(ws) -> pd.DataFrame:
    rows = ev.history(ws)
    cols = ["date", "model", "data", "fingerprint", "clips", *METRIC_LABELS]
    return pd.DataFrame(rows, columns=cols)


def build(state: AppState) -> None:
    gr.Markdown("Measure models on labelled audio: zero-shot accuracy, text→audio and audio→text recall, mAP@10. "
                "A folder holds audio plus `meta.csv` with `filename` and `label` and/or `caption`.")
    with gr.Row():
        models = gr.Dropdown(ev.available_models(state.ws), value=["shipped"], multiselect=True,
                             allow_custom_value=True, label="Models", scale=4)
        refresh_models = gr.Button("Refresh models", size="sm", scale=1)
    with gr.Row():
        source = gr.Radio([WORKSPACE_SOURCE, FOLDER_SOURCE], value=WORKSPACE_SOURCE, label="Data")
        folder = gr.Textbox(label="Labelled folder (on the server)", placeholder="/path/to/folder with meta.csv")
    templates = gr.Textbox("\n".join(ev.DEFAULT_TEMPLATES), lines=2,
                           label="Zero-shot prompt templates, one per line with {label} (averaged)")
    with gr.Row():
        run = gr.Button("Evaluate", variant="primary", scale=3)
        stop = gr.Button("Stop", variant="stop", scale=1)
    status = gr.Markdown()
    results_df = gr.Dataframe(results_table([]), label="Results", interactive=False)
    chart = gr.Plot(label="Metrics")
    with gr.Row():
        per_class = gr.Dataframe(per_class_table([]), label="Per-class zero-shot accuracy", interactive=False)
        with gr.Column():
            which = gr.Dropdown([], label="Confusion matrix of")
            confusion = gr.Plot(label="Confusion matrix")
    results_state = gr.State([])
    with gr.Accordion("History", open=False):
        history = gr.Dataframe(history_table(state.ws), label="Past evaluations (newest first)", interactive=False)
        refresh_history = gr.Button("Refresh history")

    def run_evaluation(model_names, source_name, folder_path, template_text, request: gr.Request,
                       progress=gr.Progress()):
        if not model_names:
            raise gr.Error("Choose at least one model.")
        spec = "workspace" if source_name == WORKSPACE_SOURCE else (folder_path or "").strip()
        if not spec:
            raise gr.Error("Enter a folder, or choose the workspace's labelled clips.")
        cancel = threading.Event()
        key = getattr(request, "session_hash", None) or "default"
        _cancel_events[key] = cancel

        try:
            found, errors = ev.evaluate_models(
                list(model_names), spec, ws=state.ws,
                templates=[t for t in (template_text or "").splitlines() if t.strip()] or ev.DEFAULT_TEMPLATES,
                progress=reporter(progress), cancel=cancel)
        except ev.Cancelled:
            raise gr.Error("Stopped; nothing was recorded.")
        except (OSError, ValueError) as exc:
            raise gr.Error(str(exc))
        finally:
            _cancel_events.pop(key, None)
        results = [r.to_dict() for r in found]
        lines = [f"Evaluated {len(results)} model(s) on {results[0]['clips']} clips "
                 f"(data fingerprint `{results[0]['fingerprint']}`); saved to the history."] if results else []
        lines += [f"**{name}** failed: {err}" for name, err in errors.items()]
        names = [r["model"] for r in results]
        return ("\n\n".join(lines), results_table(results), metrics_chart(results), per_class_table(results),
                gr.update(choices=names, value=names[0] if names else None),
                confusion_figure(results[0] if results else None), results, history_table(state.ws))

    def stop_evaluation(request: gr.Request):
        event = _cancel_events.get(getattr(request, "session_hash", None) or "default")
        if event:
            event.set()
        return "Stopping…"

    def show_confusion(model_name, results):
        return confusion_figure(next((r for r in results or [] if r["model"] == model_name), None))

    run_event = run.click(run_evaluation, [models, source, folder, templates],
                          [status, results_df, chart, per_class, which, confusion, results_state, history],
                          api_name="evaluate", **one_bar(status))
    stop.click(stop_evaluation, None, status, api_name="evaluate_stop", cancels=[run_event])
    which.change(show_confusion, [which, results_state], confusion, api_name="evaluate_confusion")
    refresh_models.click(lambda: gr.update(choices=ev.available_models(state.ws)), None, models,
                         api_name="evaluate_models")
    refresh_history.click(lambda: history_table(state.ws), None, history, api_name="evaluate_history")
