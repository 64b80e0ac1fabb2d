"""The Train tab's student backbone (embedded / clap / combine): the launch handler puts it into the run's
config, refuses an id that is neither a hub id nor a folder, and the status line names backbone, device
and peak memory."""
from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest

from training import jobs
from training.train import TrainConfig
from ui import train as tab
from ui.state import AppState

FORM = ["shipped", "infonce", 0.3, 1.0, 2, 8, 1e-3, 1e-4, 0.5, 0.1, 0, 0, [], "last"]   # the tab's other inputs


@pytest.fixture
def launched(ws, monkeypatch):
    """Launch with training replaced by a recorder: what config would the run get?"""
    configs = []

    def fake_launch(_ws, config):
        configs.append(TrainConfig.from_dict(config).to_dict())     # what jobs.launch itself validates
        return SimpleNamespace(id=7, pid=4321)
    monkeypatch.setattr(jobs, "launch", fake_launch)
    monkeypatch.setattr(tab, "pair_summary", lambda *a, **k: {"pairs": 12})
    state = AppState(ws.settings)
    return (lambda kind, ident="": tab.launch(state, *FORM, kind, ident)), configs


@pytest.mark.parametrize("kind, ident, expected", [
    ("embedded", "ignored/when-embedded", "embedded"),
    ("clap", "laion/clap-htsat-unfused", "clap:laion/clap-htsat-unfused"),
    ("clap", "", "clap"),
    ("combine", "facebook/wav2vec2-base+minilm", "combine:facebook/wav2vec2-base+minilm"),
])
def test_launch_puts_the_backbone_into_the_run_config(launched, kind, ident, expected):
    launch, configs = launched
    message, _ = launch(kind, ident)
    assert [c["backbone"] for c in configs] == [expected]
    assert "Launched run 7" in message and expected in message


def test_launch_accepts_an_existing_folder(launched, tmp_path):
    (tmp_path / "my-clap").mkdir()
    launch, configs = launched
    launch("clap", str(tmp_path / "my-clap"))
    assert configs[0]["backbone"] == f"clap:{tmp_path / 'my-clap'}"


@pytest.mark.parametrize("kind, ident, says", [
    ("clap", "not a hub id", "neither a hub id"),
    ("clap", "/no/such/folder", "neither a hub id"),
    ("clap", "../../no-such-folder", "neither a hub id"),
    ("clap", "owner/..", "neither a hub id"),
    ("combine", "+minilm", "needs an audio encoder"),
    ("combine", "facebook/wav2vec2-base+no such text", "text model"),
    ("resnet", "", "unknown student backbone"),
])
def test_launch_refuses_a_bad_backbone_id(launched, kind, ident, says):
    launch, configs = launched
    with pytest.raises(gr.Error, match=says):
        launch(kind, ident)
    assert configs == []                          # refused before any run started


def test_backbone_box_shows_only_for_clap_and_combine():
    assert tab.backbone_box("embedded")["visible"] is False
    assert tab.backbone_box("clap")["visible"] is True and "laion/" in tab.backbone_box("clap")["placeholder"]
    assert tab.backbone_box("combine")["interactive"] is True


def _run(ws, backbone, metrics=(), log=""):
    run = ws.catalog.add_run(TrainConfig(backbone=backbone, epochs=3).to_dict())
    folder = jobs.run_dir(ws, run.id)
    folder.mkdir(parents=True)
    (folder / jobs.METRICS_NAME).write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (folder / jobs.LOG_NAME).write_text(log)
    return run.id


def test_status_names_backbone_device_and_peak_memory(ws):
    rows = [{"kind": "epoch", "epoch": e, "step": 4 * e, "loss": 1.0, "elapsed": 10.0 * e, "eta": 5.0,
             "clips_per_second": 41.26, "peak_gpu_memory_gb": peak} for e, peak in ((1, 3.5), (2, 3.75))]
    log = ("$ python -m training train ...\n12:00:00 run 1: clap student from laion/clap-htsat-unfused: "
           "1,000 of 2,000 parameters train; device cuda:0, precision bf16, 1 process(es)\n")
    text = tab.status_markdown(jobs.run_summary(ws, _run(ws, "clap:laion/clap-htsat-unfused", rows, log)))
    assert "Student `clap:laion/clap-htsat-unfused`" in text
    assert "device cuda:0 (bf16 precision)" in text
    assert "peak GPU memory 3.75 GB" in text and "41.3 clips/s" in text


def test_status_of_an_embedded_run_shows_the_device_only(ws, monkeypatch):
    monkeypatch.setattr(jobs, "resolve_device", lambda name: "cpu" if name == "auto" else name)
    text = tab.status_markdown(jobs.run_summary(ws, _run(ws, "embedded")))   # not started: nothing logged yet
    assert "Student `embedded` · device cpu" in text and "peak" not in text
    log = "$ python ...\n12:00:00 run 2: device cpu, precision no, 1 process(es)\n"
    rows = [{"kind": "epoch", "epoch": 1, "step": 2, "loss": 1.0, "elapsed": 3.0}]
    text = tab.status_markdown(jobs.run_summary(ws, _run(ws, "embedded", rows, log)))
    assert "device cpu" in text and "precision" not in text and "peak" not in text
