"""The ONNX student: export, parity with PyTorch on real clips, and serving it from core.models.registry."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from core.models import registry as models
from core.models import onnx_student as ox
from core.store.settings import ASSETS

DEMO_AUDIO = ASSETS / "demo" / "audio"


def trained_looking_student():
    """A fresh student whose zero-initialised layers (residual MLP, log-mel branch) get random weights,
    so every part of the exported graph changes the output."""
    from core.models.student import Student
    torch.manual_seed(0)
    model = Student()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "prior":
                p.add_(0.05 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.3)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from training.export_onnx import demo_texts, demo_waves, export
    if not DEMO_AUDIO.is_dir():
        pytest.skip("assets/demo is missing")
    folder = trained_looking_student().save(tmp_path_factory.mktemp("ckpt") / "student")
    from core.models.student import Student
    student = Student.load(folder)
    report = export(student, ox.export_dir(folder), waves=demo_waves(limit=12), texts=demo_texts())
    return folder, student, report


def real_clips(n: int = 9) -> list[np.ndarray]:
    from core.store.audio import decode
    files = sorted(DEMO_AUDIO.glob("*.flac"))
    return [decode(str(p))[0] for p in files[3::max(1, len(files) // n)][:n]]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_agrees_with_pytorch_on_real_clips(exported):
    folder, student, report = exported
    assert report.ok and report.opset >= 17 and report.clips == 12
    assert report.audio_min_cosine >= 0.999 and report.text_min_cosine >= 0.999
    meta = json.loads((folder / "onnx" / ox.CONFIG_NAME).read_text())
    assert meta["model_id"] == student.model_id and meta["parity"]["audio_min_cosine"] >= 0.999
    # independently: other clips (lengths from 1 s to 10 s), other batch sizes, texts one by one
    runtime = ox.OnnxStudent(folder / "onnx")
    waves = real_clips()
    assert len({len(w) for w in waves}) > 3
    audio = cosines(student.embed_audio(waves, batch_size=4), runtime.embed_audio(waves, batch_size=32))
    assert audio.min() >= 0.999, audio
    texts = ["a chainsaw cutting wood", "the sound of a cow", "someone typing quickly on a keyboard, "
             "then a phone rings twice in another room while rain falls outside"]
    text = cosines(student.embed_text(texts), np.concatenate([runtime.embed_text([t]) for t in texts]))
    assert text.min() >= 0.999, text


def test_export_hears_the_words_of_speech_too(exported, shared_data):
    """The words channel is part of the graph: a spoken digit (with words) and a dog (without) agree."""
    from core.store.audio import decode
    folder, student, _ = exported
    assert student.config.words and json.loads((folder / "onnx" / ox.CONFIG_NAME).read_text())["words"]
    waves = [decode(str(shared_data / "fsdd" / "audio" / "0_lucas_10.flac"))[0],
             decode(str(shared_data / "ovos_animals" / "audio" / "dog.flac"))[0]]
    assert np.any(student.features(waves[:1])[0].words)
    runtime = ox.OnnxStudent(folder / "onnx")
    assert cosines(student.embed_audio(waves), runtime.embed_audio(waves)).min() >= 0.999


def test_the_app_serves_the_export_when_it_matches_the_weights(exported, monkeypatch):
    folder, student, _ = exported
    models.clear_cache()
    served = models.get_embedder(str(folder))
    assert isinstance(served, ox.OnnxStudent)
    assert served.model_id == student.model_id and served.digest() == student.digest()   # same search index
    assert models.get_embedder(str(folder)) is served                                     # loaded once
    monkeypatch.setenv("HEARSAY_ONNX", "0")
    models.clear_cache()
    assert not isinstance(models.get_embedder(str(folder)), ox.OnnxStudent)
    monkeypatch.delenv("HEARSAY_ONNX")
    # an export of other weights (a retrained checkpoint in the same folder) is never served
    stale = folder.parent / "stale"
    shutil.copytree(folder, stale)
    config = json.loads((stale / "config.json").read_text())
    (stale / "config.json").write_text(json.dumps(config | {"model_id": "hearsay-student-retrained"}))
    assert ox.find_export(stale) is None
    models.clear_cache()
    assert not isinstance(models.get_embedder(str(stale)), ox.OnnxStudent)
    models.clear_cache()


def test_cli_exports_and_refuses_to_mark_a_failed_check(exported, tmp_path, capsys):
    from training.__main__ import main
    folder, student, _ = exported
    clips = tmp_path / "clips"
    clips.mkdir()
    for path in sorted(DEMO_AUDIO.glob("*.flac"))[::20][:3]:
        shutil.copy(path, clips / path.name)
    out = tmp_path / "out"
    # an impossible bar: the files are written, but never marked as servable
    assert main(["export-onnx", "--model", str(folder), "--out", str(out), "--clips", str(clips),
                 "--min-cosine", "1.5", "--json"]) == 1
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["clips"] == 3 and not line["ok"] and line["audio_min_cosine"] >= 0.999
    assert (out / ox.AUDIO_NAME).is_file() and not (out / ox.CONFIG_NAME).exists()
    assert main(["export-onnx", "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
