"""training: losses by hand, pairs from the catalogue, the loop, resume after a kill, and the Train tab."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.pipeline.importer import import_paths
from tests.conftest import ROOT, tone
from training import data as D
from training.losses import ContrastiveLoss, make_loss, soft_targets

# -- losses -------------------------------------------------------------------------------------------------
LOG1PE = math.log(1 + math.exp(-1))       # −log(e / (e + 1)): one pair, cosine 1 vs 0, temperature 1


def test_infonce_by_hand():
    eye = torch.eye(2)
    loss = make_loss("infonce")(eye, eye, torch.tensor(0.0))
    assert loss.item() == pytest.approx(LOG1PE, abs=1e-6)


def test_infonce_asymmetric_batch_by_hand():
    audio = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.eye(2)
    # audio→text rows: [1, 0] and [0.6, 0.8]; text→audio rows: [1, 0.6] and [0, 0.8]
    def ce(row, i):
        return -(row[i] - math.log(sum(math.exp(v) for v in row)))
    pair0 = 0.5 * (ce([1, 0], 0) + ce([1, 0.6], 0))
    pair1 = 0.5 * (ce([0.6, 0.8], 1) + ce([0, 0.8], 1))
    loss = ContrastiveLoss()(audio, text, torch.tensor(0.0))
    assert loss.item() == pytest.approx((pair0 + pair1) / 2, abs=1e-6)
    weighted = ContrastiveLoss()(audio, text, torch.tensor(0.0), weights=torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(pair0, abs=1e-6)
    scaled = ContrastiveLoss()(audio, text, torch.tensor(math.log(2.0)))     # temperature 1/2
    assert scaled.item() == pytest.approx(0.5 * (0.5 * (ce([2, 0], 0) + ce([2, 1.2], 0))
                                                 + 0.5 * (ce([1.2, 1.6], 1) + ce([0, 1.6], 1))), abs=1e-6)


def test_soft_targets_forgive_duplicate_captions():
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])            # two clips, the same caption
    targets = soft_targets(same, same, beta=0.5)
    assert torch.allclose(targets, torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    eye = torch.eye(2)
    soft = ContrastiveLoss(beta=0.5)(eye, eye, torch.tensor(0.0), text_base=same)
    expected = -(0.75 * -LOG1PE + 0.25 * -(1 + LOG1PE))           # log p(other) = −1 − log(1 + e^−1)
    assert soft.item() == pytest.approx(expected, abs=1e-6)
    # unrelated captions: the soft loss is plain InfoNCE
    assert ContrastiveLoss(beta=0.5)(eye, eye, torch.tensor(0.0), text_base=eye).item() == pytest.approx(LOG1PE)
    with pytest.raises(ValueError):
        ContrastiveLoss(beta=0.3)(eye, eye, torch.tensor(0.0))


def _distributed_worker(rank, world, init_file, audio, text, base, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    n = audio.shape[0] // world
    a = audio[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = ContrastiveLoss(beta=0.3)(a, text[rank * n:(rank + 1) * n], torch.tensor(0.0),
                                     text_base=base[rank * n:(rank + 1) * n])
    # each process's loss covers its own rows; the mean over processes is the global loss
    loss.backward()
    torch.save({"loss": loss.item(), "grad": a.grad}, f"{out}.{rank}")
    torch.distributed.barrier()        # no rank tears gloo down while the other still talks to it
    torch.distributed.destroy_process_group()


def test_loss_gathers_negatives_across_processes(tmp_path):
    torch.manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    base = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    # spawn, not fork: a fork after torch has started its OpenMP threads can deadlock the children
    torch.multiprocessing.spawn(_distributed_worker, args=(2, tmp_path / "init", audio, text, base,
                                                           tmp_path / "out"), nprocs=2)
    parts = [torch.load(f"{tmp_path / 'out'}.{r}") for r in range(2)]
    a = audio.clone().requires_grad_(True)
    full = ContrastiveLoss(beta=0.3)(a, text, torch.tensor(0.0), text_base=base)
    full.backward()
    assert np.mean([p["loss"] for p in parts]) == pytest.approx(full.item(), abs=1e-5)
    # with gathered gradients, each process's rows get the gradient of the global loss (× world size)
    grads = torch.cat([p["grad"] for p in parts]) / 2
    assert torch.allclose(grads, a.grad, atol=1e-5)


# -- pairs from the catalogue ----------------------------------------------------------------------------------
FREQS = [300, 450, 700, 1000, 1500, 2200, 3300, 5000]


@pytest.fixture
def captioned_ws(ws, tmp_path):
    """Eight tone recordings with teacher captions (one 25 s recording → three windows)."""
    folder = tmp_path / "tones"
    folder.mkdir()
    for i, f in enumerate(FREQS):
        seconds = 25.0 if i == 0 else 1.0 + 0.1 * i
        sf.write(folder / f"tone{f}.wav", tone(seconds, f, amp=0.2 + 0.02 * i), 16_000)
    report = import_paths(ws, [folder])
    assert report.count("imported") == len(FREQS)
    for clip in ws.catalog.clips():
        name = ws.catalog.get_recording(clip.recording_id).original_name
        f = int(name[4:-4])
        ws.catalog.add_caption(clip.id, f"a steady tone at {f} hertz", "teacher", teacher="test", confidence=0.9)
    return ws


def test_pairs_follow_review_decisions(captioned_ws):
    ws = captioned_ws
    clips = ws.catalog.clips()
    ws.catalog.save_review(clips[0].id, status="accepted", expected_version=0, annotator="ann")
    ws.catalog.save_review(clips[1].id, status="edited", expected_version=0, annotator="ann",
                           new_text="a low hum")
    ws.catalog.save_review(clips[-1].id, status="rejected", expected_version=0, annotator="ann")
    pairs = {p.clip_id: p for p in D.collect_pairs(ws, unreviewed_weight=0.25)}
    assert clips[-1].id not in pairs                                           # rejected: never
    assert pairs[clips[0].id].weight == 1.0 and pairs[clips[1].id].weight == 1.0
    assert pairs[clips[1].id].caption == "a low hum"                           # the edit, not the teacher's
    assert pairs[clips[2].id].weight == 0.25                                   # unreviewed teacher caption
    reviewed_only = D.collect_pairs(ws, unreviewed_weight=0.0)
    assert {p.clip_id for p in reviewed_only} == {clips[0].id, clips[1].id}
    summary = D.pair_summary(ws, unreviewed_weight=0.25)
    assert summary["pairs"] == len(clips) - 1 and summary["by_status"]["accepted"] == 1


def test_split_keeps_recordings_whole(captioned_ws):
    pairs = D.collect_pairs(captioned_ws, unreviewed_weight=1.0)
    for fraction in (0.1, 0.3, 0.5):
        train, val = D.split_by_recording(pairs, fraction, seed=1)
        assert val and train and len(train) + len(val) == len(pairs)
        assert not {p.recording_id for p in train} & {p.recording_id for p in val}
    assert D.split_by_recording(pairs, 0.3, seed=1) == D.split_by_recording(pairs, 0.3, seed=1)


def test_features_are_cached_on_disk(captioned_ws, monkeypatch):
    pairs = D.collect_pairs(captioned_ws, unreviewed_weight=1.0)[:3]
    first = D.cached_features(captioned_ws, pairs, 96, quiet_gain=True, embeddings=True)
    monkeypatch.setattr(D, "extract_features", lambda *a, **k: pytest.fail("recomputed a cached clip"))
    again = D.cached_features(captioned_ws, pairs, 96, quiet_gain=True, embeddings=True)
    for a, b in zip(first, again):
        assert np.array_equal(a.logits, b.logits) and np.array_equal(a.mel, b.mel)
        assert a.emb.shape == (len(a.logits), 1024) and np.array_equal(a.emb, b.emb)


# -- the loop ------------------------------------------------------------------------------------------------
FAST = {"base_model": "fresh", "batch_size": 8, "val_fraction": 0.25, "lr": 1e-3, "prior_lr": 3e-4,
        "unreviewed_weight": 1.0, "warmup_steps": 1, "patience": 0, "log_every": 1}


def _train_loss(ws, model_dir) -> float:
    """The soft loss over all training pairs, no augmentation, eval mode."""
    from core.models.student import Student
    from training.train import evaluate
    model = Student.load(model_dir) if model_dir else None
    pairs = D.collect_pairs(ws, unreviewed_weight=1.0)
    gain, emb = (model.config.quiet_gain, model.config.tagger_embeddings) if model else (False, False)
    ds = D.PairDataset(pairs, D.cached_features(ws, pairs, 96, quiet_gain=gain, embeddings=emb),
                       D.text_embeddings([p.caption for p in pairs]))
    return evaluate(model, ds, make_loss("soft", 0.3))["val_loss"]


def test_two_epochs_on_cpu_reduce_the_loss(captioned_ws):
    from core.models.student import Student, StudentConfig
    from training.train import TrainConfig, run_training
    ws = captioned_ws
    Student(StudentConfig(name="init")).save(ws.root / "init")
    before = _train_loss(ws, ws.root / "init")
    # wise=1: the registered weights are the trained ones (the WiSE-FT blend: tests/test_anchor.py)
    result = run_training(ws, TrainConfig.from_dict({**FAST, "base_model": str(ws.root / "init"), "epochs": 2,
                                                     "wise": 1.0}))
    assert result.status == "finished" and result.epochs_done == 2
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"loss", "lr", "temperature", "val_t2a_r1", "val_a2t_r10", "val_loss"} <= set(epochs[-1])
    after = _train_loss(ws, result.run_dir / "last")
    assert after < before
    run = ws.catalog.get_run(result.run_id)
    assert run.status == "finished" and run.model_id == result.model_id
    assert ws.catalog.get_model(result.model_id).path == str(result.model_path)
    assert (result.model_path / "model.safetensors").exists()
    # keep=last (the default): the registered model is the final epoch's, whatever validation said
    assert result.best["epoch"] == 2
    assert (result.model_path / "model.safetensors").read_bytes() == \
        (result.run_dir / "last" / "model.safetensors").read_bytes()


def _cli(ws, *args) -> list[str]:
    return [sys.executable, "-m", "training", "train", "--workspace", str(ws.root), *args]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_resume_after_a_killed_run(captioned_ws, tmp_path, capsys):
    ws = captioned_ws
    config = tmp_path / "train.json"
    config.write_text(json.dumps({**FAST, "epochs": 40}))
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(_cli(ws, "--config", str(config)), cwd=ROOT, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    state = ws.runs_dir / "run-0001" / "last" / "trainer_state.pt"
    deadline = time.time() + 240
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert state.exists(), (tmp_path / "train.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)                   # no chance to clean up
    proc.wait()
    saved = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= saved < 40
    assert ws.catalog.get_run(1).status == "running"      # the dead child could not say otherwise
    from training.__main__ import main        # the same CLI, in this process (saves a second start-up)
    capsys.readouterr()
    assert main(_cli(ws, "--resume", "--epochs", str(saved + 2))[3:]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["run_id"] == 1 and result["status"] == "finished" and result["epochs"] == saved + 2
    rows = [json.loads(line) for line in (ws.runs_dir / "run-0001" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in rows if r["kind"] == "epoch"]
    assert epochs[-2:] == [saved + 1, saved + 2]         # picked up right after the checkpoint
    assert ws.catalog.get_run(1).status == "finished" and ws.catalog.get_run(1).model_id


# -- the Train tab -------------------------------------------------------------------------------------------
def test_train_tab_launches_and_cancels_a_run(captioned_ws, app_factory):
    from gradio_client import Client
    from training import jobs
    from ui.state import AppState
    ws = captioned_ws
    url = app_factory(AppState(ws.settings))
    client = Client(url, verbose=False)
    message, run_id = client.predict("fresh", "soft", 0.3, 1.0, 500, 8, 1e-3, 1e-4, 1.0, 0.25, 0, 0, [], "best",
                                        api_name="/train_launch")
    assert "Launched run" in message
    run_id = int(run_id["value"] if isinstance(run_id, dict) else run_id)   # the dropdown comes back as an update
    run = ws.catalog.get_run(run_id)
    assert run.status == "running" and jobs.pid_alive(run.pid)
    assert run.config["keep"] == "best" and run.config["loss"] == "soft"     # the form's settings reached the run
    assert os.getpgid(run.pid) == run.pid                 # its own process group
    deadline = time.time() + 240                          # let it get going: at least one metrics row
    while not jobs.read_metrics(ws, run_id) and time.time() < deadline and jobs.is_running(ws, run_id):
        time.sleep(0.5)
    assert jobs.read_metrics(ws, run_id), jobs.log_tail(ws, run_id)
    status, loss_plot, recall_plot, log = client.predict(run_id, api_name="/train_watch")
    assert f"Run {run_id}" in status and "running" in status and "training pairs" in log
    message = client.predict(run_id, api_name="/train_cancel")
    assert "cancelled" in message
    assert ws.catalog.get_run(run_id).status == "cancelled"
    assert not jobs.pid_alive(run.pid)
    # the last finished epoch's checkpoint stays usable and can become the active model
    if (jobs.run_dir(ws, run_id) / "last" / "config.json").exists():
        message, _ = client.predict(run_id, api_name="/train_make_active")
        assert "now the active model" in message and ws.catalog.active_model() is not None
