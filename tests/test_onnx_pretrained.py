"""ONNX export of the clap and combine students (issue 17): tiny random models export, agree with PyTorch
(cosine ≥ 0.999) on synthetic clips and texts, and are then served by the registry; a fusion CLAP is
refused in one line."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import soundfile as sf

from core.models import onnx_student as ox
from core.models import registry as models
from tests.conftest import tone
from tests.test_clap_student import CAPTIONS, tiny_clap  # noqa: F401 - fixture
from tests.test_combine_student import parts  # noqa: F401 - fixture

TEXTS = CAPTIONS + ["a dog barks and a cat meows in the rain while a car engine runs", "x"]


def clips() -> list[np.ndarray]:
    """Tones and noise from 0.4 s to 5 s: shorter and longer than the tiny models' windows."""
    rng = np.random.default_rng(0)
    waves = [tone(s, f, amp=0.1 + 0.1 * i) for i, (s, f) in enumerate([(0.4, 220), (1.3, 700), (2.0, 1500),
                                                                       (3.1, 3000), (5.0, 400)])]
    return waves + [(0.05 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in (0.9, 2.6)]


def assert_agrees(student, runtime) -> None:
    """Other batch sizes than the export's own check; and the clips must not all embed alike."""
    waves = clips()
    torch_audio, onnx_audio = student.embed_audio(waves, batch_size=3), runtime.embed_audio(waves, batch_size=4)
    assert (torch_audio * onnx_audio).sum(1).min() >= 0.999
    off_diagonal = (torch_audio @ torch_audio.T)[~np.eye(len(waves), dtype=bool)]
    assert off_diagonal.min() < 0.99                 # a real check: different clips, different vectors
    queries = ["a siren", "rain sounds on a quiet road"]
    text = (student.embed_text(queries) * np.concatenate([runtime.embed_text([q]) for q in queries])).sum(1)
    assert text.min() >= 0.999


def export_and_serve(student, folder, monkeypatch):
    from training.export_onnx_pretrained import export_pretrained
    report = export_pretrained(student, ox.export_dir(folder), waves=clips(), texts=TEXTS)
    assert report.ok and report.clips == 7 and report.texts == len(TEXTS), report.summary()
    assert min(report.audio_min_cosine, report.text_min_cosine) >= 0.999
    meta = json.loads((folder / "onnx" / ox.CONFIG_NAME).read_text())
    assert meta["kind"] == student.KIND and meta["model_id"] == student.model_id and meta["parity"]["audio_min_cosine"] >= 0.999

    models.clear_cache()
    served = models.get_embedder(str(folder))
    assert isinstance(served, ox.OnnxPretrained)
    assert served.model_id == student.model_id and served.digest() == student.digest() and served.dim == student.dim
    assert_agrees(student, served)
    monkeypatch.setenv("HEARSAY_ONNX", "0")
    models.clear_cache()
    assert type(models.get_embedder(str(folder))) is type(student)
    models.clear_cache()
    return meta


def test_clap_exports_agrees_and_serves(tiny_clap, tmp_path, monkeypatch):  # noqa: F811
    from core.models.clap_student import ClapStudent
    folder = ClapStudent.load(tiny_clap).save(tmp_path / "clap")
    student = ClapStudent.load(folder)
    meta = export_and_serve(student, folder, monkeypatch)
    assert meta["audio_inputs"] == ["waveform"] and meta["text_inputs"] == ["input_ids", "attention_mask"]
    # the waveform is the input (the log-mel is in the graph); the CLAP window is fixed, the batch is not
    shape = ort.InferenceSession(str(folder / "onnx" / ox.PRETRAINED_AUDIO_NAME)).get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1] == 32_000


def test_combine_exports_agrees_and_serves(parts, tmp_path, monkeypatch):  # noqa: F811
    from core.models.combine_student import CombineStudent
    audio_dir, text_dir = parts
    folder = CombineStudent.from_sources(str(audio_dir), str(text_dir)).save(tmp_path / "combine")
    student = CombineStudent.load(folder)
    meta = export_and_serve(student, folder, monkeypatch)
    assert meta["audio_inputs"] == ["input_values", "attention_mask"]
    assert set(meta["text_inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
    session = ort.InferenceSession(str(folder / "onnx" / ox.PRETRAINED_AUDIO_NAME))
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape)        # wav2vec2: batch and samples


def test_cli_exports_a_combine_student_and_refuses_a_fusion_clap(parts, tiny_clap, tmp_path, capsys):  # noqa: F811
    from core.models.clap_student import ClapStudent
    from core.models.combine_student import CombineStudent
    from training.__main__ import main
    audio_dir, text_dir = parts
    folder = CombineStudent.from_sources(str(audio_dir), str(text_dir)).save(tmp_path / "combine")
    data = tmp_path / "clips"
    data.mkdir()
    for i, wave in enumerate(clips()[:4]):
        sf.write(data / f"c{i}.wav", wave, 16_000)
    (data / "meta.csv").write_text("filename,label,caption\n" + "".join(
        f"c{i}.wav,tone,{CAPTIONS[i]}\n" for i in range(4)))
    assert main(["export-onnx", "--model", str(folder), "--clips", str(data), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ok"] and line["clips"] == 4 and line["audio_min_cosine"] >= 0.999
    assert ox.find_export(folder) == folder / "onnx"

    fused = ClapStudent.load(tiny_clap).save(tmp_path / "fused")
    config = json.loads((fused / "config.json").read_text())
    config["audio_config"]["enable_fusion"] = True
    (fused / "config.json").write_text(json.dumps(config))
    assert main(["export-onnx", "--model", str(fused), "--clips", str(data)]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported to ONNX" in err and "fusion" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (fused / "onnx").exists()
