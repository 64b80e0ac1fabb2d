"""The no-forgetting options: anchors toward the starting model, and teacher-caption replay."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from core.pipeline.importer import import_paths
from core.models.student import AudioFeatures, Student, StudentConfig, collate_features
from tests.conftest import tone
from training import data as D
from training.anchor import Anchor, blended, trainable_weights


def _batch(n: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feats = [AudioFeatures(rng.normal(-2, 2, (3, 521)).astype(np.float32), rng.normal(-3, 1, (96, 32)).astype(np.float32))
             for _ in range(n)]
    return collate_features(feats) | {"weight": torch.ones(n)}


def _nudge(model: Student) -> None:
    with torch.no_grad():
        model.mlp[-1].weight.normal_(0, 0.05)          # the residual no longer starts silent
        model.text_proj.weight.add_(0.01)


def _steps(model: Student, anchor: Anchor, batch: dict, n: int = 30) -> list[float]:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(n):
        audio = model.forward_audio(batch["logits"], batch["mask"], batch["mel"], batch["mel_lengths"])
        loss = anchor.loss(model, batch, audio)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_function_anchor_is_zero_at_the_start_and_pulls_drifted_embeddings_back():
    torch.manual_seed(0)
    model = Student(StudentConfig(mel_branch=False, tagger_embeddings=False))
    anchor = Anchor(model, anchor=1.0)
    batch = _batch()
    start = anchor.teacher.forward_audio(batch["logits"], batch["mask"]).detach()
    with torch.no_grad():
        assert float(anchor.loss(model, batch, model.forward_audio(batch["logits"], batch["mask"]))) == \
            pytest.approx(0, abs=1e-6)
    _nudge(model)
    nudged = model.forward_audio(batch["logits"], batch["mask"]).detach()
    losses = _steps(model, anchor, batch)
    assert losses[0] > 1e-3 and losses[-1] < 0.2 * losses[0]
    after = model.forward_audio(batch["logits"], batch["mask"]).detach()
    assert float((1 - (after * start).sum(-1)).max()) < 0.2 * float((1 - (nudged * start).sum(-1)).max())
    # the anchor's copy is frozen: it did not follow the model
    assert torch.allclose(anchor.teacher.forward_audio(batch["logits"], batch["mask"]), start)


def test_weight_anchor_pulls_weights_toward_their_start_and_leaves_minilm_out():
    torch.manual_seed(0)
    model = Student(StudentConfig(mel_branch=False, tagger_embeddings=False))
    anchor = Anchor(model, weight_anchor=0.1)
    assert anchor.teacher is None and not any(n.startswith("text_encoder.") for n in anchor.start)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _nudge(model)
    dist = lambda: sum(((p.detach() - start[n]) ** 2).sum().item() for n, p in model.named_parameters())  # noqa: E731
    before = dist()
    losses = _steps(model, anchor, _batch(), n=20)
    assert losses[0] == pytest.approx(0.1 * before, rel=1e-4)
    assert dist() < 0.5 * before


def test_inactive_anchor_adds_nothing():
    model = Student(StudentConfig(mel_branch=False, tagger_embeddings=False))
    anchor = Anchor(model)
    assert not anchor.active and anchor.teacher is None and not anchor.start


@pytest.fixture
def reviewed_ws(ws, tmp_path):
    folder = tmp_path / "tones"
    folder.mkdir()
    for f in (300, 500, 700):
        sf.write(folder / f"tone{f}.wav", tone(1.5, f), 16_000)
    import_paths(ws, [folder])
    clips = ws.catalog.clips()
    for c in clips:
        ws.catalog.add_caption(c.id, f"a steady tone, clip {c.id}", "teacher", teacher="test")
    ws.catalog.save_review(clips[0].id, status="edited", expected_version=0, annotator="a", new_text="a beep")
    ws.catalog.save_review(clips[1].id, status="accepted", expected_version=0, annotator="a")
    return ws, clips


def test_teacher_replay_keeps_the_teacher_caption_of_edited_clips(reviewed_ws):
    ws, clips = reviewed_ws
    plain = D.collect_pairs(ws, unreviewed_weight=1.0)
    assert len(plain) == 3
    replay = D.collect_pairs(ws, unreviewed_weight=1.0, teacher_replay=0.3)
    extra = [p for p in replay if p.status == "replay"]
    # only the edited clip gains a pair: an accepted clip's caption already is the teacher's
    assert [(p.clip_id, p.caption, p.weight) for p in extra] == [(clips[0].id, f"a steady tone, clip {clips[0].id}", 0.3)]
    edited = next(p for p in replay if p.clip_id == clips[0].id and p.status == "edited")
    assert edited.caption == "a beep" and edited.key == extra[0].key


def _small_start(ws, epochs: int) -> tuple[dict, dict]:
    """A small starting student saved in the workspace (its weights), and a fast run config from it."""
    Student(StudentConfig(name="init", mel_branch=False, tagger_embeddings=False)).save(ws.root / "init")
    fast = {"base_model": str(ws.root / "init"), "epochs": epochs, "batch_size": 4, "val_fraction": 0.0, "lr": 3e-2,
            "prior_lr": 3e-2, "unreviewed_weight": 1.0, "warmup_steps": 1, "patience": 0}
    return Student.load(ws.root / "init").state_dict(), fast


def test_training_with_a_weight_anchor_stays_closer_to_the_start(reviewed_ws):
    from training.train import TrainConfig, run_training
    ws, _ = reviewed_ws
    start, fast = _small_start(ws, epochs=3)

    def drift(over: dict) -> float:
        path = run_training(ws, TrainConfig.from_dict(fast | over)).run_dir / "last"
        after = Student.load(path).state_dict()
        return sum(float(((after[k] - start[k]) ** 2).sum()) for k in ("mlp.0.weight", "mlp.3.weight", "text_proj.weight"))

    free, anchored = drift({}), drift({"weight_anchor": 10.0})
    assert free > 0 and anchored < 0.5 * free


def test_blended_weights_lie_between_start_and_trained_and_are_put_back():
    model = Student(StudentConfig(mel_branch=False, tagger_embeddings=False))
    start = trainable_weights(model)
    _nudge(model)
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with blended(model, start, 0.25):
        now = dict(model.named_parameters())
        for n in ("mlp.3.weight", "text_proj.weight"):
            assert torch.allclose(now[n], start[n] + 0.25 * (trained[n] - start[n]), atol=1e-7)
            assert not torch.equal(now[n], trained[n])
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())


def test_training_saves_the_weight_space_ensemble_as_best(reviewed_ws):
    from training.train import TrainConfig, run_training
    ws, _ = reviewed_ws
    start, fast = _small_start(ws, epochs=2)
    for wise in (0.5, 1.0):
        result = run_training(ws, TrainConfig.from_dict(fast | {"wise": wise}))
        last = Student.load(result.run_dir / "last").state_dict()
        best = Student.load(result.model_path).state_dict()
        for k in ("mlp.3.weight", "text_proj.weight", "prior"):
            assert not torch.equal(last[k], start[k])             # training moved it
            assert torch.allclose(best[k], start[k] + wise * (last[k] - start[k]), atol=1e-6), (wise, k)
        card = (result.model_path / "README.md").read_text()
        assert ("WiSE-FT" in card) == (wise < 1)


def test_reviewed_share_counts_clips_people_chose_a_caption_for(reviewed_ws):
    ws, _ = reviewed_ws
    assert D.reviewed_share(D.collect_pairs(ws, unreviewed_weight=1.0)) == pytest.approx(2 / 3)
    # replayed teacher captions are extra pairs of the same clips, not more clips
    assert D.reviewed_share(D.collect_pairs(ws, unreviewed_weight=1.0, teacher_replay=0.5)) == pytest.approx(2 / 3)
    assert D.reviewed_share(D.collect_pairs(ws, unreviewed_weight=0.0)) == 1.0
    assert D.reviewed_share([]) == 0.0
