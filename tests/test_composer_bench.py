"""benchmarks/composer_bench.py: cached scenes compose exactly the teacher's captions, variants patch only
for their run, and the --quick run scores every shared set."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import composer_bench as cb
from benchmarks import run_all
from core.models.teachers import composer


def test_cached_scenes_compose_the_live_teachers_captions(shared_data, tmp_path, monkeypatch):
    from core.models.teachers.embedded import EmbeddedTeacher, wording_seed
    from core.store import audio
    monkeypatch.setenv("HEARSAY_CACHE", str(tmp_path / "cache"))       # Whisper really runs on the digit
    paths = [shared_data / "ovos_animals" / "audio" / "dog.flac", sorted((shared_data / "fsdd" / "audio").iterdir())[0]]
    waves = [audio.decode(p)[0] for p in paths]
    teacher = EmbeddedTeacher()
    live = [o.caption for o in teacher.caption(waves)]
    scenes = {str(i): (wording_seed(w), s) for i, (w, s) in enumerate(zip(waves, teacher.analyse(waves)))}
    assert scenes["1"][1].transcript is not None                       # the round trip carries words too
    cb.save_scenes(tmp_path / "scenes", scenes)
    back = cb.load_scenes(tmp_path / "scenes", teacher.labels)
    assert [c.caption for c in cb.compose_all(back, "shipped").values()] == live
    assert cb.load_scenes(tmp_path / "missing", teacher.labels) == {}


def test_a_variant_patches_the_composer_only_for_its_run():
    from core.models import yamnet
    from core.models.teachers.descriptors import describe
    labels = yamnet.class_names()
    probs = np.full((9, len(labels)), 0.01, dtype=np.float32)
    probs[:, labels.index("Dog")] = [0.9, 0.05, 0.05, 0.9, 0.05, 0.05, 0.05, 0.05, 0.05]    # two barks
    wave = 0.05 * np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32)
    scenes = {"a": (1, composer.Scene(labels, probs, describe(wave)))}
    said = lambda variant: cb.compose_all(scenes, variant)["a"].caption  # noqa: E731
    assert "twice" in said("shipped") or "two times" in said("shipped")
    assert "twice" not in said("no-timing") and "two times" not in said("no-timing") and "dog" in said("no-timing")
    assert composer.timing is cb._timing and composer.SECOND_RATIO == 0.2       # restored after the run
    assert said("counts-only") == said("shipped")                              # a count is kept


def test_quick_run_scores_every_set_and_writes_a_caption_cache(shared_data, tmp_path, capsys):
    assert "composer_bench" in {s.stem for s in run_all.discover()} and run_all.supports_quick(
        run_all.HERE / "composer_bench.py")
    assert cb.main(["--quick", "--work", str(tmp_path), "--write-captions", "no-timing"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["zero_shot"]) == {"shipped", "no-timing"}
    for acc in report["zero_shot"].values():
        assert set(acc) == set(cb.bs.EVAL_SETS) and all(0.0 <= v <= 1.0 for v in acc.values())
    rows = [json.loads(line) for line in open(report["captions_file"], encoding="utf-8")]
    assert len(rows) == sum(report["clips"].values()) == 80
    assert all(r["prompt"] == composer.VERSION and "|" in r["key"] and r["caption"] for r in rows)
    assert (tmp_path / "composer_scenes.npz").exists()            # a second run composes from the cache


@pytest.mark.parametrize("name", list(cb.VARIANTS))
def test_every_variant_patches_real_composer_attributes(name):
    assert all(hasattr(composer, attr) for attr in cb.VARIANTS[name])
