"""Combined students (issue 17, `--student combine:<audio>+<text>`): a tiny random wav2vec2 and a tiny
sentence-transformers model, joined by trained projections, go through train → save → load → index →
search → evaluate offline on a CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_clap_student import CAPTIONS, clap_ws, tiny_clap  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from training.combine_configs import build_audio_encoder_folder, build_sentence_folder
    root = tmp_path_factory.mktemp("combine")
    return build_audio_encoder_folder(root / "w2v"), build_sentence_folder(root / "st")


def test_train_save_load_index_search_evaluate(clap_ws, parts, tmp_path):  # noqa: F811
    from core.pipeline import index, search
    from core.models.combine_student import CombineStudent
    from core.models.registry import clear_cache, get_embedder
    from training.evaluate import evaluate, load_folder
    from training.train import TrainConfig, run_training

    audio_dir, text_dir = parts
    ws = clap_ws
    cfg = TrainConfig.from_dict({"backbone": f"combine:{audio_dir}+{text_dir}", "epochs": 1, "batch_size": 4,
                                 "val_fraction": 0.25, "unreviewed_weight": 1.0, "warmup_steps": 1, "patience": 0,
                                 "log_every": 1, "backbone_options": {"lr": 1e-3, "head_lr": 1e-2,
                                                                      "freeze_text_layers": -1}})
    result = run_training(ws, cfg)
    assert result.status == "finished" and result.model_id.startswith("hearsay-combine-")
    folder = result.model_path
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "combine" and config["hearsay"]["audio_model"] == str(audio_dir)
    for name in ("model.safetensors", "README.md", "audio/config.json", "audio/preprocessor_config.json",
                 "text/modules.json"):
        assert (folder / name).is_file(), name

    clear_cache()
    model = get_embedder(result.model_id, ws)
    fresh = CombineStudent.from_sources(str(audio_dir), str(text_dir))
    assert isinstance(model, CombineStudent) and model.model_id == result.model_id and model.dim == 16
    waves = [ws.load_clip(c.id) for c in ws.catalog.clips()]
    audio = model.embed_audio(waves)
    assert audio.shape == (len(waves), 16) and np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)
    assert not np.allclose(audio, fresh.embed_audio(waves), atol=1e-4)           # the audio side trained
    trained_text = model.text_model.state_dict()
    for k, v in fresh.text_model.state_dict().items():                          # the frozen text tower did not
        assert np.array_equal(v.numpy(), trained_text[k].numpy()), k

    report = index.sync(ws, model, captions=False)
    assert report.embedded == len(waves) and not report.failed
    assert report.collection == index.collection_name(ws, result.model_id)
    page = search.search_text(ws, model, "a dog barks", k=3)
    assert page.model_id == result.model_id and len(page.hits) == 3

    import soundfile as sf

    from tests.conftest import tone
    data = tmp_path / "eval"
    data.mkdir()
    lines = ["filename,label,caption"]
    for i, f in enumerate([220, 500, 1100, 2600]):
        sf.write(data / f"t{i}.wav", tone(1.5, f), 16_000)
        lines.append(f"t{i}.wav,{'low' if f < 1000 else 'high'},{CAPTIONS[i]}")
    (data / "meta.csv").write_text("\n".join(lines) + "\n")
    out = evaluate(model, load_folder(data))
    assert out.model_id == result.model_id and out.clips == 4 and out.zero_shot_acc is not None


def test_parameters_without_gradient_are_frozen_before_ddp(parts, tiny_clap):  # noqa: F811
    """DDP on several processes refuses parameters the loss never reaches (checked by hand under
    `torchrun --nproc_per_node 2`); one dry step finds and freezes them for both kinds."""
    from core.models.clap_student import ClapStudent
    from core.models.combine_student import CombineStudent
    from tests.conftest import tone
    from training.train import TrainConfig
    from training.train_clap import Collate, freeze_unused
    items = [{"wave": tone(1.0, 300 * (i + 1)), "caption": c, "weight": 1.0, "seed": i} for i, c in enumerate(CAPTIONS[:4])]
    combined = CombineStudent.from_sources(str(parts[0]), str(parts[1]))
    assert freeze_unused(combined, Collate(combined)(items), TrainConfig()) == [
        "text_model.0.model.pooler.dense.weight", "text_model.0.model.pooler.dense.bias"]
    assert all(p.grad is None for p in combined.parameters())
    clap = ClapStudent.load(tiny_clap)
    assert freeze_unused(clap, Collate(clap)(items), TrainConfig()) == ["model.logit_scale_t"]
    assert not clap.model.logit_scale_t.requires_grad and clap.model.logit_scale_a.requires_grad


def test_lora_adapts_both_towers_and_saves_them_merged(parts, tmp_path, monkeypatch):
    """LoRA on wav2vec2's q/k/v_proj and the sentence model's BERT query/key/value (see
    test_clap_student.lora_round_trip for what is checked)."""
    from core.models.combine_student import CombineStudent
    from tests.test_clap_student import lora_round_trip
    counts = lora_round_trip(CombineStudent.from_sources(str(parts[0]), str(parts[1])), tmp_path, monkeypatch)
    assert counts == {"plain": 15_473, "lora": 1_153, "adapters": 576}     # rank 2 on the tiny towers


def test_learning_rates_go_by_place_not_name(parts):
    """The towers' parameters (wav2vec2's q_proj and its adapters included) get --clap-lr, the head --head-lr."""
    from core.models.combine_student import CombineStudent
    from training.train_clap import ClapOptions, add_lora, param_groups
    student = CombineStudent.from_sources(str(parts[0]), str(parts[1]))
    add_lora(student, 2, 16.0)
    names = {id(p): n for n, p in student.named_parameters()}
    groups = param_groups(student, ClapOptions(lr=1e-4, head_lr=1e-3), 0.01)
    assert [g["lr"] for g in groups] == [1e-4, 1e-3, 1e-3]
    tower, head, scale = ([names[id(p)] for p in g["params"]] for g in groups)
    assert all("lora_" in n for n in tower) and any(".q_proj.lora_" in n for n in tower)
    assert sorted(head) == ["audio_proj.0.bias", "audio_proj.0.weight", "audio_proj.1.bias", "audio_proj.1.weight",
                            "text_proj.bias", "text_proj.weight"] and scale == ["logit_scale"]


@pytest.mark.parametrize("encoder", ["ast", "whisper"])
def test_other_audio_encoders_embed_and_reload(parts, encoder, tmp_path):
    """AST (input_values of mel frames) and Whisper (its encoder alone, 30 s features) behind the same surface."""
    from core.models.combine_student import CombineStudent
    from training.combine_configs import build_audio_encoder_folder
    student = CombineStudent.from_sources(str(build_audio_encoder_folder(tmp_path / encoder, encoder)), str(parts[1]))
    waves = [np.random.default_rng(0).standard_normal(16_000 * s).astype(np.float32) * 0.1 for s in (1, 3)]
    audio = student.embed_audio(waves)
    assert audio.shape == (2, 16) and np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)
    again = CombineStudent.load(student.save(tmp_path / "saved"))
    assert type(again.encoder).__name__ == ("WhisperEncoder" if encoder == "whisper" else "ASTModel")
    assert np.allclose(again.embed_audio(waves), audio, atol=1e-5)


def test_missing_parts_say_what_to_download(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from core.models.clap_student import ModelUnavailable
    from core.models.combine_student import CombineStudent, locate_text
    from training.train_clap import parse_backbone
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert parse_backbone("combine:facebook/wav2vec2-base") == ("combine", "facebook/wav2vec2-base")
    with pytest.raises(ValueError, match="name an audio encoder"):
        parse_backbone("combine:+minilm")
    with pytest.raises(ModelUnavailable, match="hf download facebook/wav2vec2-base"):
        CombineStudent.from_sources("facebook/wav2vec2-base", "minilm")
    with pytest.raises(ModelUnavailable, match="hf download someone/st-model"):
        locate_text("someone/st-model")
    (tmp_path / "half").mkdir()
    with pytest.raises(ModelUnavailable, match="not a complete combined student"):
        CombineStudent.load(tmp_path / "half")
