"""CLAP students (issue 17): a tiny random ClapModel trains, saves, loads through the model registry,
indexes into its own collection, searches and evaluates, all offline on a CPU; missing weights say
what to download."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from core.pipeline.importer import import_paths
from tests.conftest import tone

CAPTIONS = ["a low hum", "a high tone", "a dog barks", "a cat meows", "a bird sings", "rain sounds",
            "a car engine", "a siren"]
FREQS = [220, 330, 500, 750, 1100, 1700, 2600, 3900]


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    from training.clap_configs import build_clap_folder
    return build_clap_folder(tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture
def clap_ws(ws, tmp_path):
    """Eight tones with distinct teacher captions; the first lasts 5 s (longer than the tiny 2 s window)."""
    folder = tmp_path / "tones"
    folder.mkdir()
    for i, f in enumerate(FREQS):
        sf.write(folder / f"tone{i}.wav", tone(5.0 if i == 0 else 1.0 + 0.2 * i, f, amp=0.2 + 0.03 * i), 16_000)
    assert import_paths(ws, [folder]).count("imported") == len(FREQS)
    for clip in ws.catalog.clips():
        i = int(ws.catalog.get_recording(clip.recording_id).original_name[4:-4])
        ws.catalog.add_caption(clip.id, CAPTIONS[i], "teacher", teacher="test", confidence=0.9)
    return ws


def _train(ws, folder, epochs=1, **extra):
    from training.train import TrainConfig, run_training
    cfg = TrainConfig.from_dict({"backbone": f"clap:{folder}", "epochs": epochs, "batch_size": 4,
                                 "val_fraction": 0.25, "unreviewed_weight": 1.0, "warmup_steps": 1,
                                 "patience": 0, "log_every": 1, "name": "tiny-clap", **extra})
    return run_training(ws, cfg)


def test_train_save_load_index_search_evaluate(clap_ws, tiny_clap, tmp_path):
    from core.pipeline import index, search
    from core.models.clap_student import ClapStudent
    from core.models.registry import clear_cache, get_embedder
    from training.__main__ import main as training_main

    ws = clap_ws
    before = ClapStudent.from_pretrained(str(tiny_clap))
    result = _train(ws, tiny_clap, epochs=2, backbone_options={"lr": 3e-3, "head_lr": 3e-3})
    assert result.status == "finished" and result.epochs_done == 2 and result.model_id.startswith("tiny-clap-")

    folder = result.model_path
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "clap" and config["model_id"] == result.model_id and config["model_type"] == "clap"
    assert config["hearsay"]["base_model"] == str(tiny_clap)
    for name in ("model.safetensors", "README.md", "preprocessor_config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "trainer_state.pt").exists()
    assert "tiny-clap-" in (folder / "README.md").read_text() and "base_model:" in (folder / "README.md").read_text()
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 2 and "val_t2a_r1" in epochs[-1] and epochs[-1]["clips_per_second"] > 0
    assert 0.05 < epochs[-1]["peak_memory_gb"] < 64

    clear_cache()
    model = get_embedder(result.model_id, ws)
    assert isinstance(model, ClapStudent) and model.model_id == result.model_id and model.dim == 16
    waves = [ws.load_clip(c.id) for c in ws.catalog.clips()]
    audio = model.embed_audio(waves)
    assert audio.shape == (len(waves), 16) and np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)
    assert not np.allclose(audio, before.embed_audio(waves), atol=1e-4)          # training moved the weights
    reloaded = ClapStudent.load(folder)                                          # and the folder holds them
    assert np.allclose(reloaded.embed_audio(waves), audio, atol=1e-5)
    assert np.allclose(reloaded.embed_text(CAPTIONS), model.embed_text(CAPTIONS), atol=1e-5)

    report = index.sync(ws, model, captions=False)
    assert report.embedded == len(waves) and not report.failed
    assert report.collection == index.collection_name(ws, result.model_id)
    assert index.collection_name(ws, result.model_id) != index.collection_name(ws, before.model_id)
    page = search.search_text(ws, model, "a dog barks", k=3)
    assert page.model_id == result.model_id and len(page.hits) == 3
    text = model.embed_text(["a dog barks"])[0]
    assert page.hits[0].model_score == pytest.approx(float(np.max(audio @ text)), abs=1e-3)

    data = tmp_path / "eval"
    data.mkdir()
    lines = ["filename,label,caption"]
    for i, f in enumerate(FREQS[:6]):
        sf.write(data / f"t{i}.wav", tone(1.5, f), 16_000)
        lines.append(f"t{i}.wav,{'low' if f < 1000 else 'high'},{CAPTIONS[i]}")
    (data / "meta.csv").write_text("\n".join(lines) + "\n")
    details = tmp_path / "details.json"
    assert training_main(["evaluate", "--model", result.model_id, "--data", str(data), "--workspace", str(ws.root),
                          "--details", str(details)]) == 0
    out = json.loads(details.read_text())
    assert out["model_id"] == result.model_id and out["clips"] == 6 and out["zero_shot_acc"] is not None


def test_frozen_layers_keep_their_weights(clap_ws, tiny_clap):
    from core.models.clap_student import ClapStudent
    result = _train(clap_ws, tiny_clap, backbone_options={"freeze_audio_layers": -1, "freeze_text_layers": 1,
                                                          "lr": 1e-2})
    before, after = ClapStudent.load(tiny_clap).model.state_dict(), ClapStudent.load(result.model_path).model.state_dict()
    same = {k for k in before if np.array_equal(before[k].numpy(), after[k].numpy())}
    assert all(k in same for k in before if k.startswith("audio_model.") and "num_batches" not in k)
    assert "text_model.encoder.layer.0.attention.self.query.weight" in same
    assert "audio_projection.linear1.weight" not in same and "text_projection.linear1.weight" not in same


def test_resume_continues_after_the_last_epoch(clap_ws, tiny_clap):
    from training.train import TrainConfig, run_training
    first = _train(clap_ws, tiny_clap, epochs=1)
    cfg = TrainConfig.from_dict({**json.loads((first.run_dir / "config.json").read_text()), "epochs": 2})
    again = run_training(clap_ws, cfg, run_id=first.run_id, run_dir=first.run_dir, resume=True)
    assert again.status == "finished" and again.epochs_done == 2 and again.model_id != first.model_id
    rows = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]


def test_clap_baseline_is_the_untrained_student(tiny_clap):
    from core.models.clap_student import ClapStudent
    from training.evaluate import resolve_model
    model = resolve_model(f"clap:{tiny_clap}", device="cpu")
    assert isinstance(model, ClapStudent) and model.model_id == f"clap:{tiny_clap}"
    assert model.embed_text(["a dog barks", "a siren"]).shape == (2, 16)


def lora_round_trip(student, tmp_path, monkeypatch, steps: int = 15) -> dict:
    """LoRA on `student` (either kind): only adapters and the head train; a few full-batch steps lower
    the loss and move the adapters but no tower weight; the saved folder holds merged weights without
    adapter keys and loads through the registry with peft unavailable, embedding as the trained model
    does. Returns the trainable-parameter counts."""
    import sys

    import torch
    from safetensors import safe_open

    from core.models.registry import clear_cache, get_embedder
    from training.losses import make_loss
    from training.train_clap import Collate, add_lora, towers
    plain_trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    tower_weights = {n: p.detach().clone() for n, p in student.named_parameters() if n.startswith(towers(student))}
    torch.manual_seed(0)
    add_lora(student, rank=2, alpha=16.0)
    trainable = {n: p for n, p in student.named_parameters() if p.requires_grad}
    adapters = [n for n in trainable if "lora_" in n]
    assert adapters and all(n.startswith(towers(student)) for n in adapters)
    assert all(("lora_" in n) != (not n.startswith(towers(student))) for n in trainable)   # adapters or head
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} <= {"query", "key", "value", "q_proj",
                                                                           "k_proj", "v_proj"}
    items = [{"wave": tone(1.0 + i / 4, 300 * (i + 1)), "caption": c, "weight": 1.0, "seed": i}
             for i, c in enumerate(CAPTIONS[:4])]
    batch = Collate(student)(items)["inputs"]
    loss_fn = make_loss("infonce", distill=1.0)

    def loss() -> float:
        student.eval()
        with torch.no_grad():
            return float(loss_fn(*student(**batch)))

    start = loss()
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    student.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(*student(**batch)).backward()
        optimizer.step()
    assert loss() < 0.9 * start
    assert all(trainable[n].abs().sum() > 0 for n in adapters if "lora_B" in n)       # B starts at zero
    assert all(torch.equal(p, tower_weights[n.replace(".base_layer", "")])
               for n, p in student.named_parameters() if n in tower_weights or ".base_layer." in n)

    folder = student.save(tmp_path / "lora-student")
    for weights in folder.rglob("*.safetensors"):
        with safe_open(str(weights), "pt") as fh:
            assert fh.keys() and not any("lora" in k or "base_layer" in k for k in fh.keys()), weights
    monkeypatch.setitem(sys.modules, "peft", None)          # loading needs no peft
    clear_cache()
    reloaded = get_embedder(str(folder))
    assert type(reloaded) is type(student) and not any("lora" in n for n, _ in reloaded.named_parameters())
    waves = [tone(1.3, 440), tone(2.5, 1200)]
    assert np.allclose(reloaded.embed_audio(waves), student.embed_audio(waves), atol=1e-5)
    assert np.allclose(reloaded.embed_text(CAPTIONS), student.embed_text(CAPTIONS), atol=1e-5)
    return {"plain": plain_trainable, "lora": sum(p.numel() for p in trainable.values()),
            "adapters": sum(trainable[n].numel() for n in adapters)}


def test_lora_trains_adapters_and_saves_them_merged(tiny_clap, tmp_path, monkeypatch):
    from core.models.clap_student import ClapStudent
    counts = lora_round_trip(ClapStudent.load(tiny_clap), tmp_path, monkeypatch)
    assert counts == {"plain": 10_213, "lora": 1_570, "adapters": 480}     # rank 2 on the tiny model


def test_lora_run_leaves_frozen_layers_and_their_adapters_alone(clap_ws, tiny_clap):
    """`--lora-rank` through a training run: frozen layers get no trained adapters (the audio tower
    comes back bit for bit), the text tower's adapters are merged into its attention weights."""
    from core.models.clap_student import ClapStudent
    result = _train(clap_ws, tiny_clap, backbone_options={"lora_rank": 2, "freeze_audio_layers": -1, "lr": 1e-2,
                                                          "lora_alpha": 32.0})
    assert result.status == "finished"
    before, after = ClapStudent.load(tiny_clap).model.state_dict(), ClapStudent.load(result.model_path).model.state_dict()
    assert before.keys() == after.keys()
    same = {k for k in before if torch_equal(before[k], after[k])}
    assert all(k in same for k in before if k.startswith("audio_model."))
    assert "text_model.encoder.layer.0.attention.self.query.weight" not in same
    assert "text_model.encoder.layer.0.attention.output.dense.weight" in same            # not adapted
    assert "audio_projection.linear1.weight" not in same


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_lora_without_peft_says_what_to_install(tiny_clap, monkeypatch):
    import sys

    from core.models.clap_student import ClapStudent
    from training.train_clap import add_lora
    monkeypatch.setitem(sys.modules, "peft", None)          # as if peft were not installed
    with pytest.raises(RuntimeError, match="pip install peft"):
        add_lora(ClapStudent.load(tiny_clap), 2, 16.0)


@pytest.mark.parametrize("size", ["tiny", "real"])
def test_torch_log_mel_matches_the_feature_extractor(size):
    """ClapStudent computes the extractor's non-fusion features in torch (fast, on the GPU): same numbers."""
    from core.models.clap_student import ClapStudent, audio_inputs
    from training.clap_configs import clap_parts, tiny_tokenizer
    if size == "real":         # the real extractor (48 kHz, 1024-point FFT, 64 mels) on the tiny model
        from transformers import ClapFeatureExtractor
        model, features, tokenizer = clap_parts("tiny")[0], ClapFeatureExtractor(), tiny_tokenizer()
    else:
        model, features, tokenizer = clap_parts("tiny")
    student = ClapStudent(model, features, tokenizer)
    rng = np.random.default_rng(0)
    waves = [tone(1.3, 440) + 0.05 * rng.standard_normal(20_800).astype(np.float32),   # shorter than the window
             0.1 * rng.standard_normal(int(16_000 * (features.max_length_s + 1))).astype(np.float32)]  # longer
    ours = student.log_mel(audio_inputs(features, waves)["waveform"]).numpy()
    from core.store import audio
    sr, limit = features.sampling_rate, features.nb_max_samples
    ready = [audio.resample(w, 16_000, sr) for w in waves]
    ready[1] = ready[1][(len(ready[1]) - limit) // 2:][:limit]                     # the same centre window
    theirs = features(ready, sampling_rate=sr, return_tensors="np", truncation="rand_trunc",
                      padding="repeatpad")["input_features"]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 0.05                                      # dB


def test_gradient_checkpointing_gives_the_same_gradients(tiny_clap):
    """The GPU path's checkpointing (ClapModel refuses `gradient_checkpointing_enable`), checked on a CPU;
    the batch comes through the DataLoader's collate, which must pickle for worker processes."""
    import pickle

    import torch

    from core.models.clap_student import ClapStudent
    from training.losses import make_loss
    from training.train_clap import Collate, enable_checkpointing
    student = ClapStudent.load(tiny_clap).train()
    collate = pickle.loads(pickle.dumps(Collate(student)))
    items = [{"wave": tone(1.0 + i / 4, 300 * (i + 1)), "caption": c, "weight": 1.0, "seed": i}
             for i, c in enumerate(CAPTIONS[:4])]
    batch = collate(items)["inputs"]

    def grads():
        torch.manual_seed(0)                  # the same dropout masks (checkpointing replays the RNG state)
        student.zero_grad()
        make_loss("infonce", distill=1.0)(*student(**batch)).backward()
        return {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    calls = []
    student.model.text_model.encoder.layer[0].attention.register_forward_hook(lambda *a: calls.append(1))
    plain = grads()
    assert enable_checkpointing(student) == 3 and len(calls) == 1    # 2 HTSAT stages + 1 RoBERTa layer
    checkpointed = grads()
    assert len(calls) == 3                                  # forward, then again during backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)


def test_student_kinds_are_checked():
    from training.train import TrainConfig
    assert TrainConfig().backbone == "embedded"
    assert TrainConfig.from_dict({"backbone": "clap"}).backbone == "clap"
    with pytest.raises(ValueError, match="unknown student"):
        TrainConfig.from_dict({"backbone": "whisper:tiny"})
    from training.train_clap import ClapOptions, parse_backbone
    assert parse_backbone("clap") == ("clap", "laion/clap-htsat-unfused")
    with pytest.raises(ValueError, match="unknown CLAP option"):
        ClapOptions.from_dict({"lora": 4})


def test_cli_student_flag_reaches_the_config():
    import argparse

    from core.cli import train as cli_train
    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--student", "clap:some/repo", "--freeze-audio-layers", "2", "--lora-rank", "8",
                              "--no-gradient-checkpointing", "--epochs", "3"])
    values = cli_train.build_config(args)
    assert values["backbone"] == "clap:some/repo" and values["epochs"] == 3
    assert values["backbone_options"] == {"freeze_audio_layers": 2, "lora_rank": 8, "gradient_checkpointing": False}
    assert "backbone" not in cli_train.build_config(parser.parse_args(["train"]))


def test_cli_trains_a_clap_student(clap_ws, tiny_clap, capsys):
    from training.__main__ import main as training_main
    code = training_main(["train", "--workspace", str(clap_ws.root), "--student", f"clap:{tiny_clap}", "--epochs", "1",
                          "--batch-size", "4", "--unreviewed-weight", "1", "--val-fraction", "0.25",
                          "--freeze-text-layers", "1", "--head-lr", "0.001"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["status"] == "finished" and out["model_id"].startswith("hearsay-clap-")
    run = json.loads((clap_ws.runs_dir / f"run-{out['run_id']:04d}" / "config.json").read_text())
    assert run["backbone"] == f"clap:{tiny_clap}"
    assert run["backbone_options"] == {"freeze_text_layers": 1, "head_lr": 0.001}
    assert clap_ws.catalog.get_model(out["model_id"]).path.endswith(out["model_id"])


def test_missing_model_says_what_to_download(ws, tmp_path, capsys, monkeypatch):
    from core.models.clap_student import ModelUnavailable, locate
    from core.models.registry import get_embedder
    from training.__main__ import main as training_main
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))

    with pytest.raises(ModelUnavailable) as err:
        locate("nobody/no-such-clap")
    assert "hf download nobody/no-such-clap" in str(err.value) and str(tmp_path / "hub") in str(err.value)

    empty = tmp_path / "clap-no-weights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "clap", "kind": "clap", "model_id": "x"}))
    with pytest.raises(ModelUnavailable, match="has no CLAP weights"):
        get_embedder(str(empty))
    with pytest.raises(ModelUnavailable, match="hf download laion/clap-htsat-unfused --local-dir"):
        locate(str(empty))

    code = training_main(["train", "--workspace", str(ws.root), "--student", "clap:nobody/no-such-clap"])
    err_text = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err_text
    assert err_text.count("\n") == 1 and "hf download nobody/no-such-clap" in err_text


def test_training_learns_the_pairs(clap_ws, tiny_clap):
    """Thirty full-batch steps on the eight pairs: the InfoNCE loss starts above chance (ln 8) and ends
    well under it (deterministic: seeded crops and initialisation)."""
    result = _train(clap_ws, tiny_clap, epochs=30, batch_size=8, distill=0.0, val_fraction=0.0, log_every=100,
                    backbone_options={"lr": 1e-2, "head_lr": 1e-2})
    losses = [json.loads(line)["loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert np.mean(losses[-3:]) < 0.75 * math.log(8) < math.log(8) < np.mean(losses[:3])
