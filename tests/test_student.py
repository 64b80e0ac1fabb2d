"""core.models.student and core.models.registry: the student's inference surface, checkpoints and model resolution."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.models import registry as models
from core.models.embedder import Embedder
from core.models.student import (CONFIG_NAME, WEIGHTS_NAME, AudioFeatures, Student, StudentConfig, collate_features,
                          extract_features, student_patches)
from tests.conftest import tone


def random_prior(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(521, 384, generator=g), dim=-1)


@pytest.fixture(scope="module")
def student() -> Student:
    """A student with a random prior and non-zero residual layers (so every part shows in its outputs)."""
    torch.manual_seed(0)
    model = Student(StudentConfig(), class_embeddings=random_prior())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.dim() > 1:
                p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def waves():
    rng = np.random.default_rng(0)
    return [tone(5.0, 440.0), tone(0.2, 1000.0), (0.1 * rng.standard_normal(16_000 * 7)).astype(np.float32),
            tone(1.3, 3000.0, amp=0.05)]


def test_embeddings_are_normalised_batched_and_shaped(student):
    ws = waves()
    emb = student.embed_audio(ws, batch_size=32)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([student.embed_audio([w]) for w in ws])
    assert np.allclose(emb, one_by_one, atol=1e-5)           # padding in a batch changes nothing
    assert not np.allclose(emb[0], emb[2], atol=1e-3)          # different sounds, different vectors
    text = student.embed_text(["a dog barking", "rain on a roof"])
    assert text.shape == (2, 384) and np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert student.embed_audio([]).shape == (0, 384)
    assert isinstance(student, Embedder)


def test_patches_cover_the_whole_clip():
    mel = np.zeros((500, 64), np.float32)                      # 5 s of frames
    assert student_patches(mel, 96).shape == (5, 96, 64)       # 0–96, …, 384–480; an 0.2 s tail is not worth a patch
    assert student_patches(mel[:10], 96).shape == (1, 96, 64)  # shorter than one patch
    assert student_patches(mel, 48).shape == (9, 96, 64)


def test_collate_pads_and_masks():
    feats = [AudioFeatures(np.ones((3, 521), np.float32), np.zeros((40, 32), np.float32)),
             AudioFeatures(np.ones((1, 521), np.float32), np.zeros((7, 32), np.float32))]
    b = collate_features(feats)
    assert b["logits"].shape == (2, 3, 521) and b["mask"].tolist() == [[True] * 3, [True, False, False]]
    assert b["mel"].shape == (2, 40, 32) and b["mel_lengths"].tolist() == [40, 7]


def test_save_load_round_trip(student, tmp_path):
    folder = student.save(tmp_path / "ckpt", {"data": {"pairs": 3}, "metrics": {"zero-shot": 0.5}})
    files = {p.name for p in folder.iterdir()}
    assert {CONFIG_NAME, WEIGHTS_NAME, "README.md"} <= files
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["model_id"] == student.model_id and student.model_id.startswith("hearsay-student-")
    assert (folder / WEIGHTS_NAME).stat().st_size < 12 * 2**20     # frozen MiniLM (90 MB) / YAMNet are not copied
    assert "zero-shot: 0.5" in (folder / "README.md").read_text()
    loaded = Student.load(folder)
    assert loaded.model_id == student.model_id
    ws = waves()
    assert np.allclose(loaded.embed_audio(ws), student.embed_audio(ws), atol=1e-6)
    assert np.allclose(loaded.embed_text(["a bell"]), student.embed_text(["a bell"]), atol=1e-6)
    # the id is stable: saving the same weights again gives the same id
    assert loaded.save(tmp_path / "again").name == "again" and loaded.model_id == student.model_id


def test_model_id_changes_with_the_weights(tmp_path):
    a = Student(StudentConfig(), class_embeddings=random_prior(1))
    b = Student(StudentConfig(), class_embeddings=random_prior(2))
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert a.model_id != b.model_id


def test_fine_tuned_text_layers_are_saved_and_only_they(tmp_path):
    model = Student(StudentConfig(text_trainable_layers=1), class_embeddings=random_prior())
    trained = model.trained_text_keys()
    assert trained and all(".layer.5." in k for k in trained)
    with torch.no_grad():
        dict(model.named_parameters())[trained[0]].add_(0.5)
    before = model.embed_text(["a kettle whistles"])
    model.save(tmp_path / "ft")
    state_keys = set(model.trainable_state())
    assert not any(".layer.0." in k for k in state_keys)               # frozen layers stay in the package
    loaded = Student.load(tmp_path / "ft")
    assert np.allclose(loaded.embed_text(["a kettle whistles"]), before, atol=1e-5)


def test_untrained_student_already_hears_real_sounds(shared_data):
    """The class-name prior alone: a dog recording lands nearer to 'dog' than to unrelated sounds."""
    from core.store import audio
    model = Student(StudentConfig())
    names = ["dog", "cow", "sheep"]
    clips = [audio.decode(shared_data / "ovos_animals" / "audio" / f"{n}.flac")[0] for n in names]
    emb = model.embed_audio(clips)
    text = model.embed_text([f"the sound of a {n}" for n in ["dog", "cow", "sheep", "piano", "car engine"]])
    sim = emb @ text.T
    assert [int(np.argmax(row)) for row in sim] == [0, 1, 2]


def test_features_match_the_tagger():
    """The student's patches at YAMNet's own hop give the tagger's own logits."""
    from core.models import yamnet
    wave = tone(3.0, 440.0)
    f = extract_features([wave], patch_hop=yamnet.PATCH_HOP)[0]
    ref = yamnet.get_tagger().patch_logits([wave])[0]
    # the student's torch front end and the tagger's numpy one differ by float rounding, which tips some
    # quantised values by a step; what the student uses — pooled clip probabilities — must still agree
    assert f.logits.shape == ref.shape
    ours, theirs = yamnet.pool(f.logits), yamnet.pool(ref)
    assert np.abs(ours - theirs).max() < 0.03
    assert list(np.argsort(ours)[-3:]) == list(np.argsort(theirs)[-3:])


def test_quiet_clips_are_lifted_for_the_tagger_only(shared_data):
    """A quiet booth recording: the tagger hears it raised (as the teacher does) and stops hearing
    "Silence"; the log-mel branch keeps the true level; a loud clip is left exactly as it was."""
    from core.store import audio
    from core.models import yamnet
    wave = audio.decode(shared_data / "jt_booth_sounds" / "audio" / "ElectricShaver__Shaver01.flac")[0]
    assert yamnet.tagging_gain(wave) > 2.0
    plain, lifted = extract_features([wave]), extract_features([wave], quiet_gain=True)
    silence = yamnet.class_names().index("Silence")
    assert yamnet.pool(plain[0].logits)[silence] > 0.5 > yamnet.pool(lifted[0].logits)[silence]
    assert np.array_equal(plain[0].mel, lifted[0].mel)
    loud = tone(2.0, 440.0, amp=0.5)
    assert yamnet.tagging_gain(loud) == 1.0
    assert np.array_equal(extract_features([loud])[0].logits, extract_features([loud], quiet_gain=True)[0].logits)


def test_tagger_embeddings_come_from_the_same_pass():
    """The 1024-d embeddings ride along with the class scores: same logits, non-negative (post-ReLU)
    embeddings that differ between different sounds."""
    from core.models import yamnet
    tagger = yamnet.get_tagger()
    assert tagger.has_embeddings
    p = np.concatenate([yamnet.patches(tone(2.0, 440.0)), yamnet.patches(tone(2.0, 3000.0, amp=0.05))])
    logits, emb = tagger.patch_outputs_from_patches(p)
    assert np.array_equal(logits, tagger.patch_logits_from_patches(p))
    assert emb.shape == (len(p), yamnet.EMB_DIM) and emb.min() >= 0 and emb.max() > 0
    assert not np.allclose(emb[0], emb[-1])
    assert tagger.patch_outputs_from_patches(p, embeddings=False)[1] is None


def test_checkpoints_from_before_the_gain_and_embeddings_keep_their_front_end():
    assert StudentConfig().quiet_gain is True and StudentConfig().tagger_embeddings is True
    old = StudentConfig.from_dict({"name": "old"})
    assert old.quiet_gain is False and old.tagger_embeddings is False and old.words is False
    assert old.generic_fade == 0.0
    assert StudentConfig().words is True and StudentConfig().generic_fade > 0
    assert StudentConfig.from_dict(StudentConfig().to_dict()).quiet_gain is True


def test_the_student_hears_the_words_of_speech(shared_data):
    """The words channel: a spoken digit's transcript joins its vector, so it lands on its word among
    the ten digits; a sound without speech is left exactly as the sound-only student embeds it."""
    from core.store import audio
    digit = audio.decode(shared_data / "fsdd" / "audio" / "0_lucas_10.flac")[0]
    dog = audio.decode(shared_data / "ovos_animals" / "audio" / "dog.flac")[0]
    listening, deaf = Student(StudentConfig(words=True)), Student(StudentConfig(words=False))
    feats = listening.features([digit, dog])
    assert np.abs(feats[0].words).sum() > 0 and not np.any(feats[1].words)
    assert deaf.features([digit])[0].words is None
    numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    text = listening.embed_text([f"the sound of {n}" for n in numbers])
    heard, sound_only = listening.embed_audio([digit, dog]), deaf.embed_audio([digit, dog])
    assert int(np.argmax(heard[0] @ text.T)) == 0
    assert float(heard[0] @ text[0]) > float(sound_only[0] @ text[0]) + 0.1
    assert np.allclose(heard[1], sound_only[1], atol=1e-6)
    # the words go through the trainable text projection: what training teaches captions, they learn too
    with torch.no_grad():
        listening.text_proj.weight.mul_(-1)
    assert not np.allclose(listening.embed_audio([digit])[0], heard[0], atol=1e-3)


def test_generic_parents_fade_once_a_specific_class_of_their_branch_is_heard():
    """As the teacher drops "music" once a guitar is heard, the prior fades a generic parent linearly to 0
    as the loudest specific class of its branch reaches `generic_fade`; other branches are untouched."""
    from core.models import yamnet
    names = yamnet.class_names()
    music, guitar, dog = names.index("Music"), names.index("Guitar"), names.index("Dog")
    animal = names.index("Animal")
    model = Student(StudentConfig(generic_fade=0.1, tagger_embeddings=False))   # the prior alone
    pooled = torch.zeros(3, 521)
    pooled[:, music] = 0.95
    pooled[:, animal] = 0.6
    pooled[0, guitar], pooled[1, guitar], pooled[2, guitar] = 0.0, 0.05, 0.15
    share = model.generic_share(pooled)
    assert torch.allclose(share[:, music], torch.tensor([1.0, 0.5, 0.0]))
    assert torch.all(share[:, animal] == 1.0) and torch.all(share[:, guitar] == 1.0)    # no dog heard
    assert torch.all(Student(StudentConfig(generic_fade=0.0)).generic_share(pooled) == 1.0)
    # end to end: a clip scored "Music 0.95, Guitar 0.15" reads far more as a guitar than as a piano
    logits = torch.logit(pooled[2:].clamp(1e-4, 1 - 1e-4)).unsqueeze(1)
    plain = Student(StudentConfig(generic_fade=0.0, tagger_embeddings=False))
    text = model.embed_text(["the sound of guitar", "the sound of piano"])
    faded, kept = (m.forward_audio(logits).detach().numpy()[0] @ text.T for m in (model, plain))
    assert faded[0] - faded[1] > kept[0] - kept[1] + 0.1
    assert dog not in torch.nonzero(share[0] < 1).flatten().tolist()


def test_words_survive_the_feature_cache(tmp_path, shared_data):
    from core.store import audio
    from training.data import FeatureCache
    digit = audio.decode(shared_data / "fsdd" / "audio" / "0_lucas_10.flac")[0]
    f = extract_features([digit], words=True)[0]
    cache = FeatureCache(tmp_path)
    cache.save("k", f)
    back = cache.load("k")
    assert back.words is not None and np.allclose(back.words, f.words)
    plain = extract_features([digit])[0]
    cache.save("p", plain)
    assert cache.load("p").words is None


# -- core.models.registry -------------------------------------------------------------------------------------------
def test_models_resolve_folders_ids_and_active(ws, student, tmp_path):
    folder = student.save(tmp_path / "m1")
    models.clear_cache()
    by_path = models.get_embedder(str(folder))
    assert by_path.model_id == student.model_id
    assert models.get_embedder(str(folder)) is by_path                   # cached per process
    ws.catalog.register_model(student.model_id, str(folder))
    assert models.get_embedder(student.model_id, ws) is by_path
    with pytest.raises(KeyError):
        models.get_embedder("no-such-model", ws)
    models.activate(ws, student.model_id)
    assert models.get_embedder("active", ws).model_id == student.model_id
    assert any(m["id"] == student.model_id and m["active"] for m in models.available_models(ws))


def test_active_falls_back_to_the_shipped_student(ws):
    if models.shipped_model_id() is None:
        pytest.skip("assets/student is not built yet")
    shipped = models.get_embedder("active", ws)
    assert shipped.model_id == models.shipped_model_id()
    record = models.activate(ws, "shipped")
    assert record.id == shipped.model_id and ws.catalog.active_model().id == shipped.model_id
    assert (models.SHIPPED_DIR / "README.md").exists()
    size = sum(p.stat().st_size for p in models.SHIPPED_DIR.iterdir())
    assert size <= 30 * 2**20


def test_class_name_prior_speaks_like_the_teacher():
    from core.models import yamnet
    from core.models.student import class_phrases, class_weights
    names = yamnet.class_names()
    spoken = class_phrases("{spoken}")
    assert spoken[names.index("Dog")] == "a dog barks"
    assert class_phrases("the sound of {}")[names.index("Dog")] == "the sound of dog"
    w = class_weights()
    assert w[names.index("Silence")] == 0 and w[names.index("Inside, small room")] == 0     # say nothing of the source
    assert w[names.index("Music")] == 0.5 and w[names.index("Dog")] == 1
    assert torch.equal(class_weights("uniform"), torch.ones(521))
