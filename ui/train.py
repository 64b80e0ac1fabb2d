"""Train tab: pick data and hyper-parameters, launch a run in the background, watch it, cancel, resume,
compare a finished run's model with the active one on held-out data, make a checkpoint the active model.

Every event calls one `training.jobs` (or `training.data`) function; this module only lays out
widgets and draws the curves.
"""
from __future__ import annotations

from pathlib import Path

from types import SimpleNamespace

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from core.auth.access import ADMIN, allows
from core.models.registry import choices
from training import jobs
from training.compare import CompareError, compare_run
from training.data import pair_summary
from training.train import TrainConfig
from ui.progress import one_bar, reporter
from ui.state import AppState

DEFAULTS = TrainConfig()
RUN_COLUMNS = ["run", "status", "epoch", "loss", "val t2a R@1", "val zero-shot", "model", "started"]
COMPARE_COLUMNS = ["set", "metric", "active", "new", "Δ"]


def _num(v, digits=3):
    return None if v is None else round(float(v), digits)


def runs_table(state: AppState) -> pd.DataFrame:
    jobs.reconcile(state.ws)
    rows = []
    for run in state.ws.catalog.runs():
        s = jobs.run_summary(state.ws, run.id)
        rows.append({"run": run.id, "status": s["status"], "epoch": f"{s['epoch']}/{s['epochs'] or '?'}",
                     "loss": _num(s["loss"]), "val t2a R@1": _num(s["val_t2a_r1"]),
                     "val zero-shot": _num(s["val_zero_shot"]), "model": s["model_id"] or "", "started": run.created})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_choices(state: AppState) -> list[int]:
    return [r.id for r in state.ws.catalog.runs()]


def data_markdown(state: AppState, unreviewed_weight: float, sources: list[str] | None) -> str:
    s = pair_summary(state.ws, unreviewed_weight=float(unreviewed_weight), sources=sources or None)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items())) or "none"
    return (f"**{s['pairs']}** pairs from **{s['recordings']}** recordings (by review status: {statuses}; "
            f"total weight {s['weight']}). Rejected clips never train; unreviewed teacher captions weigh "
            f"{float(unreviewed_weight):g}.")


def curves(rows: list[dict]) -> tuple[go.Figure, go.Figure]:
    train = [r for r in rows if r.get("kind") == "train"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    loss = go.Figure()
    if train:
        loss.add_scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train], name="train (step)", mode="lines")
    if epochs:
        loss.add_scatter(x=[r["step"] for r in epochs], y=[r["loss"] for r in epochs], name="train (epoch mean)",
                         mode="lines+markers")
        if any("val_loss" in r for r in epochs):
            loss.add_scatter(x=[r["step"] for r in epochs], y=[r.get("val_loss") for r in epochs],
                             name="validation", mode="lines+markers")
    loss.update_layout(title="loss", xaxis_title="step", height=300, margin=dict(l=40, r=10, t=40, b=40))
    recall = go.Figure()
    for key, name in (("val_t2a_r1", "text→audio R@1"), ("val_t2a_r5", "text→audio R@5"),
                      ("val_t2a_r10", "text→audio R@10"), ("val_a2t_r1", "audio→text R@1"),
                      ("val_zero_shot", "zero-shot accuracy")):
        if any(key in r for r in epochs):
            recall.add_scatter(x=[r["epoch"] for r in epochs], y=[r.get(key) for r in epochs], name=name,
                               mode="lines+markers")
    recall.update_layout(title="validation", xaxis_title="epoch", yaxis=dict(range=[0, 1]), height=300,
                         margin=dict(l=40, r=10, t=40, b=40))
    for fig in (loss, recall):
        _say_starting_when_empty(fig)
    return loss, recall


def _say_starting_when_empty(fig: go.Figure) -> None:
    """A blank axis before the first epoch looks broken; say the run is starting instead."""
    if not fig.data:
        fig.add_annotation(text="starting…", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(size=16, color="gray"))


def status_markdown(summary: dict) -> str:
    def hms(sec):
        if sec is None:
            return "–"
        sec = int(sec)
        return f"{sec // 3600}:{sec % 3600 // 60:02d}:{sec % 60:02d}"
    text = (f"**Run {summary['id']}**: {summary['status']} · epoch {summary['epoch']}/{summary['epochs'] or '?'} · "
            f"elapsed {hms(summary['elapsed'])} · ETA {hms(summary['eta']) if summary['status'] == 'running' else '–'}")
    if summary.get("model_id"):
        text += f" · model `{summary['model_id']}`"
    if summary.get("backbone"):
        text += f"\n\nStudent `{summary['backbone']}` · device {summary.get('device') or '?'}"
        if summary.get("clips_per_second"):
            text += f" · {summary['clips_per_second']:.1f} clips/s"
        if summary.get("peak_memory"):
            text += f" · peak {summary['peak_memory']}"
    if summary.get("error"):
        text += f"\n\n⚠️ {summary['error']}"
    return text


def watch(state: AppState, run_id):
    """Everything the live panel shows for one run."""
    if run_id in (None, ""):
        loss, recall = curves([])
        return "No run selected.", loss, recall, ""
    run_id = int(run_id)
    jobs.reconcile(state.ws)
    summary = jobs.run_summary(state.ws, run_id)
    loss, recall = curves(jobs.read_metrics(state.ws, run_id))
    return status_markdown(summary), loss, recall, jobs.log_tail(state.ws, run_id)


def comparison_table(result: dict) -> pd.DataFrame:
    """compare_run's rows as the tab shows them: the held-out set with its size, a folder by its name."""
    rows = [{"set": f"held-out ({result['pairs']} pairs)" if r["set"] == "held-out" else Path(r["set"]).name,
             "metric": r["metric"], "active": _num(r["active"]), "new": _num(r["new"]),
             "Δ": None if r["delta"] is None else f"{r['delta']:+.3f}"} for r in result["rows"]]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def comparison_markdown(result: dict) -> str:
    text = (f"Run {result['run']}'s model `{result['new_model']}` (new) against the active model "
            f"`{result['active_model']}`, on {result['pairs']} held-out pairs from {result['recordings']} "
            "recordings the run never trained on.")
    if result["already_active"]:
        text += " This model is already the active one, so both columns match."
    if result.get("note"):
        text += f"\n\n{result['note']}"
    if result["failed"]:
        text += f"\n\n{len(result['failed'])} clip(s) could not be read and were left out."
    if result["warning"]:
        text += f"\n\n⚠️ **{result['warning'][0].upper()}{result['warning'][1:]}.**"
    return text


BACKBONE_HINTS = {"clap": "laion/clap-htsat-unfused (empty: that one), or a folder on the server",
                  "combine": "facebook/wav2vec2-base+minilm: <audio encoder>+<text model>, hub ids or folders"}


def backbone_box(kind: str):
    """The id box only means something for clap / combine."""
    return gr.update(visible=kind in BACKBONE_HINTS, interactive=kind in BACKBONE_HINTS,
                     placeholder=BACKBONE_HINTS.get(kind, ""))


def launch(state: AppState, base_v, loss_v, beta_v, distill_v, epochs_v, batch_v, lr_v, prior_lr_v, unrev_v, valf_v,
           pat_v, layers_v, sources_v, keep_v="last", backbone_kind="embedded", backbone_id=""):
    """The Launch button: the form → a run config → training.jobs.launch (admin-only: core/auth/access.py)."""
    try:
        backbone = jobs.backbone_spec(backbone_kind, backbone_id)
    except ValueError as exc:
        raise gr.Error(str(exc))
    config = DEFAULTS.to_dict() | {
        "base_model": base_v or "shipped", "loss": loss_v, "beta": float(beta_v), "distill": float(distill_v),
        "epochs": int(epochs_v),
        "batch_size": int(batch_v), "lr": float(lr_v), "prior_lr": float(prior_lr_v),
        "unreviewed_weight": float(unrev_v), "val_fraction": float(valf_v), "patience": int(pat_v),
        "text_trainable_layers": int(layers_v) if int(layers_v) > 0 else -1, "sources": list(sources_v or []),
        "keep": keep_v or "last", "backbone": backbone}
    if pair_summary(state.ws, unreviewed_weight=config["unreviewed_weight"],
                    sources=config["sources"] or None)["pairs"] < 2:
        raise gr.Error("Fewer than 2 caption pairs to learn from: caption (and review) some clips first, "
                       "or raise the weight of unreviewed captions.")
    run = jobs.launch(state.ws, config)
    return (f"Launched run {run.id} in the background (process {run.pid}), student `{backbone}`.",
            gr.update(choices=run_choices(state), value=run.id))


def base_model_choices(state: AppState) -> list[str]:
    return choices(state.ws, "shipped", "fresh", shipped=False)


def _picked(run_id) -> int:
    """The picked run's id; without one, a message that asks for it."""
    if run_id in (None, ""):
        raise gr.Error("Pick a run first.")
    return int(run_id)


class TrainEvents:
    """The Train tab's event handlers: the values the page sends in, what it shows out."""

    def __init__(self, state: AppState):
        self.state = state

    def do_launch(self, base_v, loss_v, beta_v, distill_v, epochs_v, batch_v, lr_v, prior_lr_v, unrev_v, valf_v,
                  pat_v, layers_v, sources_v, keep_v="last", backbone_kind_v="embedded", backbone_id_v=""):
        return launch(self.state, base_v, loss_v, beta_v, distill_v, epochs_v, batch_v, lr_v, prior_lr_v, unrev_v,
                      valf_v, pat_v, layers_v, sources_v, keep_v, backbone_kind_v, backbone_id_v)

    def do_cancel(self, run_id):
        run = jobs.cancel(self.state.ws, _picked(run_id))
        return f"Run {run.id}: {run.status}. Its last checkpoint (if an epoch finished) stays usable."

    def do_resume(self, run_id):
        run_id = _picked(run_id)
        try:
            run = jobs.resume(self.state.ws, run_id)
        except (FileNotFoundError, RuntimeError) as exc:
            raise gr.Error(str(exc))
        return f"Resumed run {run.id} (process {run.pid})."

    def do_activate(self, run_id):
        run_id = _picked(run_id)
        try:
            model_id = jobs.promote(self.state.ws, run_id)
        except FileNotFoundError as exc:
            raise gr.Error(str(exc))
        return f"`{model_id}` is now the active model: search and the map use it.", \
            gr.update(choices=base_model_choices(self.state))

    def do_compare(self, run_id, folder, progress=gr.Progress()):
        run_id = _picked(run_id)
        try:
            result = compare_run(self.state.ws, run_id, folder or None, progress=reporter(progress))
        except CompareError as exc:
            raise gr.Error(str(exc))
        return comparison_markdown(result), comparison_table(result)

    def show_admin_controls(self, request: gr.Request):
        return gr.update(visible=allows(self.state.role(request), ADMIN))

    def tick(self, run_id):
        return (*watch(self.state, run_id), runs_table(self.state))


# -- the tab: layout in sections (each adds its components to `c`), then the wiring ------------------

def _settings_column(c: SimpleNamespace, state: AppState) -> None:
    with gr.Column(scale=1):
        gr.Markdown("### Data")
        c.sources = gr.Dropdown(label="Sources (empty: all)", choices=state.ws.catalog.sources(), multiselect=True,
                                value=[])
        c.unreviewed = gr.Slider(0, 1, value=DEFAULTS.unreviewed_weight, step=0.05,
                                 label="Weight of unreviewed teacher captions (0 = reviewed only)")
        c.val_fraction = gr.Slider(0, 0.5, value=DEFAULTS.val_fraction, step=0.05,
                                   label="Validation share (split by recording)")
        c.data_info = gr.Markdown()
        gr.Markdown("### Model and loss")
        c.base = gr.Dropdown(label="Start from", choices=base_model_choices(state), value=DEFAULTS.base_model,
                             allow_custom_value=True)
        c.loss = gr.Radio(["infonce", "soft"], value=DEFAULTS.loss, label="Loss",
                          info="soft: targets (1-β)·I + β·caption similarity; infonce: plain symmetric InfoNCE")
        c.beta = gr.Slider(0, 0.9, value=DEFAULTS.beta, step=0.05, label="β (soft loss)")
        c.distill = gr.Slider(0, 3, value=DEFAULTS.distill, step=0.25,
                              label="Distillation weight (pull each clip onto its caption's point)")
        c.text_layers = gr.Slider(0, 6, value=0, step=1,
                                  label="MiniLM layers to fine-tune (0 = as the base model: frozen by default)")
        with gr.Row():
            c.backbone_kind = gr.Dropdown(list(jobs.BACKBONE_KINDS), value="embedded", label="Student backbone",
                                          scale=1, info="embedded: the shipped student; clap / combine: "
                                          "fine-tune a pretrained pair (a GPU helps)")
            c.backbone_id = gr.Textbox("", label="Backbone id (hub owner/name or folder)", scale=2, visible=False,
                                       interactive=False)
        with gr.Accordion("Hyper-parameters", open=False):
            c.epochs = gr.Number(value=DEFAULTS.epochs, precision=0, minimum=1, label="Epochs")
            c.batch = gr.Number(value=DEFAULTS.batch_size, precision=0, minimum=2, label="Batch size")
            c.lr = gr.Number(value=DEFAULTS.lr, label="Learning rate (MLP, log-mel branch)")
            c.prior_lr = gr.Number(value=DEFAULTS.prior_lr, label="Learning rate (class-name prior, projection)")
            c.keep = gr.Radio(["last", "best"], value=DEFAULTS.keep, label="Checkpoint to keep",
                              info="last: the final epoch; best: best validation recall, with early stopping")
            c.patience = gr.Number(value=DEFAULTS.patience, precision=0, minimum=0,
                                   label="Early-stopping patience (epochs, 0 = off; with 'best')")
        with gr.Row():
            c.launch_btn = gr.Button("Launch", variant="primary")
        c.launch_msg = gr.Markdown()


def _runs_column(c: SimpleNamespace, state: AppState) -> None:
    with gr.Column(scale=2):
        gr.Markdown("### Runs")
        with gr.Row():
            c.run_pick = gr.Dropdown(label="Run", choices=[], value=None, allow_custom_value=True)
            c.cancel_btn = gr.Button("Cancel run", variant="stop")
            c.resume_btn = gr.Button("Resume")
            c.activate_btn = gr.Button("Make active")
        c.status = gr.Markdown("No run selected.")
        with gr.Accordion("Compare with the active model", open=True):
            gr.Markdown("Both models on the run's held-out recordings (text→audio recall; zero-shot where "
                        "clips carry labels) and, optionally, on a labelled folder.")
            with gr.Row():
                # a path on the server: admins only (core/auth/access.py ARGUMENT_RULES); shown to them on load
                c.compare_folder = gr.Textbox(label="Labelled folder on the server (optional)", scale=3,
                                              placeholder="/path/to/folder with meta.csv (filename, label)",
                                              visible=not state.policy.enabled, elem_id="train-compare-folder")
                c.compare_btn = gr.Button("Compare", variant="primary", scale=1, elem_id="train-compare")
            c.compare_note = gr.Markdown(elem_id="train-compare-note")
            c.compare_table = gr.Dataframe(value=pd.DataFrame(columns=COMPARE_COLUMNS), interactive=False,
                                           elem_id="train-compare-table")
            with gr.Row():
                c.compare_activate_btn = gr.Button("Make this model active", scale=0, min_width=260, size="md")
                c.compare_msg = gr.Markdown()
        with gr.Row():
            c.loss_plot = gr.Plot(label="Loss")
            c.recall_plot = gr.Plot(label="Validation")
        c.log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, autoscroll=True, interactive=False)
        # empty until an annotator's page loads (the load below): build-time values are in /config
        c.runs = gr.Dataframe(value=pd.DataFrame(columns=RUN_COLUMNS), interactive=False, wrap=True, max_height=260)
        c.refresh_btn = gr.Button("Refresh", size="sm")


def build(state: AppState) -> None:
    device, cpu_only = jobs.device_summary()
    gr.Markdown(f"**Training device:** {device}" + (
        "\n\n⚠️ Only a CPU is present. The default student trains on cached tagger features and needs "
        "minutes on a CPU; fine-tuning MiniLM layers or large data wants a GPU." if cpu_only else ""))
    c = SimpleNamespace()
    with gr.Row():
        _settings_column(c, state)
        _runs_column(c, state)
    c.timer = gr.Timer(2.0)
    ev = TrainEvents(state)
    settings_inputs = [c.base, c.loss, c.beta, c.distill, c.epochs, c.batch, c.lr, c.prior_lr, c.unreviewed,
                       c.val_fraction, c.patience, c.text_layers, c.sources, c.keep, c.backbone_kind, c.backbone_id]

    c.launch_btn.click(ev.do_launch, settings_inputs, [c.launch_msg, c.run_pick], api_name="train_launch",
                       concurrency_limit=1)
    # a lambda: page events of this tab are classified by that name (core/auth/access.py PAGE_EVENTS)
    c.backbone_kind.change(lambda k: backbone_box(k), [c.backbone_kind], [c.backbone_id], api_name=False)
    c.cancel_btn.click(ev.do_cancel, [c.run_pick], [c.launch_msg], api_name="train_cancel")
    c.resume_btn.click(ev.do_resume, [c.run_pick], [c.launch_msg], api_name="train_resume")
    c.activate_btn.click(ev.do_activate, [c.run_pick], [c.launch_msg, c.base], api_name="train_make_active")
    c.run_pick.change(lambda r: watch(state, r), [c.run_pick], [c.status, c.loss_plot, c.recall_plot, c.log],
                      api_name="train_watch")
    c.run_pick.change(lambda: ("", pd.DataFrame(columns=COMPARE_COLUMNS), ""), None,
                      [c.compare_note, c.compare_table, c.compare_msg], api_name=False)   # an old run's numbers go
    c.compare_btn.click(ev.do_compare, [c.run_pick, c.compare_folder], [c.compare_note, c.compare_table],
                        api_name="train_compare", **one_bar(c.compare_table))
    c.compare_activate_btn.click(ev.do_activate, [c.run_pick], [c.compare_msg, c.base],
                                 api_name="train_compare_make_active")
    watched = [c.status, c.loss_plot, c.recall_plot, c.log, c.runs]
    c.refresh_btn.click(ev.tick, [c.run_pick], watched, api_name="train_refresh")
    c.timer.tick(ev.tick, [c.run_pick], watched, api_name=False, show_progress="hidden")
    for comp in (c.unreviewed, c.sources):
        comp.change(lambda u, s: data_markdown(state, u, s), [c.unreviewed, c.sources], [c.data_info],
                    api_name=False)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(lambda u, s: (data_markdown(state, u, s), gr.update(choices=state.ws.catalog.sources()),
                                gr.update(choices=run_choices(state)), runs_table(state)),
                  [c.unreviewed, c.sources], [c.data_info, c.sources, c.run_pick, c.runs], api_name=False)
        root.load(ev.show_admin_controls, None, [c.compare_folder], api_name=False)
