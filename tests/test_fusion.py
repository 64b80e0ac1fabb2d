"""core.pipeline.fusion (z-scored late fusion) and `training evaluate --fusion` on a tiny labelled folder.

The folder is tests/test_evaluate.py's: seven tones, the last a low tone labelled high (the audio
model gets it wrong). The fake caption side "heard" every clip as its label says, so captions alone
score 7/7 and the fused score can be worked out by hand.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.pipeline import fusion
from tests.test_evaluate import MODEL, ToneEmbedder, last_json_line, write_folder
from training import evaluate as ev
from training.__main__ import main as training_main

rng = np.random.default_rng(0)


def test_z_scoring_makes_the_scales_irrelevant():
    audio, caption = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    base = fusion.fuse(audio, caption, 0.4)
    # any per-row affine rescaling of either side (a wider or shifted cosine range) changes nothing
    scaled = fusion.fuse(audio * 0.01 + 0.3, caption * np.array([[5.0], [0.2], [1.0], [30.0]]) - 2, 0.4)
    assert scaled == pytest.approx(base)
    # raw scores on very different scales would let the wide side decide alone; z-scores do not
    narrow, wide = np.array([0.30, 0.31, 0.29]), np.array([0.9, 0.1, 0.5])
    assert np.argmax((narrow + wide) / 2) == 0 and np.argmax(fusion.fuse(narrow, wide, 0.2)) == 1


def test_weight_zero_is_audio_order_and_one_is_caption_order():
    audio, caption = rng.normal(size=(3, 12)), rng.normal(size=(3, 12))
    for row in range(3):
        assert list(np.argsort(fusion.fuse(audio, caption, 0.0)[row])) == list(np.argsort(audio[row]))
        assert list(np.argsort(fusion.fuse(audio, caption, 1.0)[row])) == list(np.argsort(caption[row]))
    assert fusion.fuse(audio, caption, 0.0) == pytest.approx(fusion.zscore(audio))
    with pytest.raises(ValueError):
        fusion.fuse(audio, caption, 1.5)
    with pytest.raises(ValueError):
        fusion.fuse(audio, caption[:, :3], 0.5)


def test_missing_captions_rank_below_every_caption_and_rows_are_independent():
    z = fusion.zscore(np.array([[0.2, np.nan, 0.6, 0.4], [5.0, 5.0, np.nan, 5.0]]))
    assert z[0] == pytest.approx([-np.sqrt(1.5), -np.sqrt(1.5) - 1, np.sqrt(1.5), 0.0])
    assert list(z[1]) == [0.0, 0.0, -1.0, 0.0]                     # a constant row: no spread, all even
    assert list(fusion.zscore(np.array([np.nan, np.nan]))) == [0.0, 0.0]
    assert fusion.in_units_of(fusion.fuse([0.1, 0.3], [0.9, 0.0], 0.0), [0.1, 0.3]) == pytest.approx([0.1, 0.3])


def test_adaptive_fusion_lets_the_confident_side_lead_each_row():
    # 20 candidates. Row 0: a caption that names one candidate outright (one clear peak: a quoted
    # spoken digit) where the audio model spreads its scores evenly and ranks that candidate low;
    # row 1: the reverse, a peaked audio side beside a vague caption side
    even = np.linspace(0.2, 0.4, 20)
    named = np.full(20, 0.1)
    named[3] = 0.9
    audio, caption = np.stack([even, named]), np.stack([named, even])
    fixed_caption_light = fusion.fuse(audio, caption, 0.3, adaptive=False)
    assert fixed_caption_light == pytest.approx(0.7 * fusion.zscore(audio) + 0.3 * fusion.zscore(caption))
    assert np.argmax(fixed_caption_light[0]) == 19                     # a fixed mix follows the even spread
    assert np.argmax(fusion.fuse(audio, caption, 0.3)[0]) == 3          # adaptive: the confident caption leads
    assert np.argmax(fusion.fuse(audio, caption, 0.7, adaptive=False)[1]) == 19
    assert np.argmax(fusion.fuse(audio, caption, 0.7)[1]) == 3          # and the confident audio, the other way
    # the weight still counts: at a caption share of 0.05 the even audio spread decides row 0 again
    assert np.argmax(fusion.fuse(audio, caption, 0.05)[0]) == 19
    # a row where no clip has a caption (constant caption side) ranks by audio alone, at any weight
    for w in (0.3, 0.5, 0.9):
        assert fusion.fuse(even, np.full(20, np.nan), w) == pytest.approx(fusion.zscore(even))
    assert list(fusion.fuse(np.ones(3), np.ones(3), 0.5)) == [0.0, 0.0, 0.0]     # both flat: all tie


class FakeCaptions:
    """Caption side of the test: the clip's caption names the band its *label* says (g: "high")."""

    TEXT = {"a": "a low tone", "b": "a low tone", "c": "a mid tone", "d": "a mid tone", "e": "a high tone",
            "f": "a high tone", "g": "a high tone"}

    def __init__(self, *args, **kwargs):
        pass

    def captions(self, items):
        return [it.published if it.published is not None else self.TEXT[Path(it.name).stem] for it in items]

    def embed_text(self, texts):
        return ToneEmbedder().embed_text(texts)


def test_evaluate_fusion_reports_model_captions_and_fused(tmp_path):
    folder = write_folder(tmp_path / "tones")
    plain = ev.evaluate(ToneEmbedder(), folder)
    assert plain.fusion is None and plain.fused == {} and "fused" not in plain.summary()
    by_weight = {w: ev.evaluate(ToneEmbedder(), folder, fusion=w, caption_side=FakeCaptions()) for w in (0, .5, .6, 1)}
    for w, r in by_weight.items():
        assert r.zero_shot_acc == round(6 / 7, 4) and r.captions["zero_shot_acc"] == 1.0 and r.fusion == w
    # clip g over classes (high, low, mid): audio z (-.71, 1.41, -.71), caption z (1.41, -.71, -.71);
    # at 0.5 high and low tie (counted wrong), from 0.6 the caption carries it
    assert [by_weight[w].fused["zero_shot_acc"] for w in (0, .5, .6, 1)] == [round(6 / 7, 4)] * 2 + [1.0, 1.0]
    assert {k: by_weight[0].fused[k] for k in ev.METRIC_KEYS} == {k: getattr(plain, k) for k in ev.METRIC_KEYS}
    assert by_weight[1].fused == by_weight[1].captions
    with pytest.raises(ValueError):
        ev.evaluate(ToneEmbedder(), folder, fusion=2.0, caption_side=FakeCaptions())


def test_cli_fusion_json_and_text(tmp_path, capsys, monkeypatch):
    folder = write_folder(tmp_path / "tones")
    monkeypatch.setattr(ev, "TeacherCaptions", FakeCaptions)
    assert training_main(["evaluate", "--model", MODEL, "--data", str(folder), "--json", "--fusion", "0.6"]) == 0
    out = last_json_line(capsys.readouterr().out)
    assert (out["zero_shot_acc"], out["fusion"]) == (round(6 / 7, 4), 0.6)
    assert out["captions"]["zero_shot_acc"] == 1.0 and out["fused"]["zero_shot_acc"] == 1.0
    monkeypatch.setenv("HEARSAY_FUSION_WEIGHT", "0.5")               # bare --fusion: the setting's weight
    assert training_main(["evaluate", "--model", MODEL, "--data", str(folder), "--fusion"]) == 0
    text = capsys.readouterr().out
    assert "caption weight 0.5" in text and "zero_shot_acc" in text


def test_workspace_fusion_uses_published_captions(ws, tmp_path):
    from core.pipeline.importer import import_paths
    import_paths(ws, [write_folder(tmp_path / "tones")])
    for clip in ws.catalog.clips():
        rec = ws.catalog.get_recording(clip.recording_id)
        if Path(rec.original_name).name == "g.wav":
            ws.catalog.add_caption(clip.id, "a high tone", "teacher")   # only g is captioned
    data = ev.load_data("workspace", ws)
    assert sorted(i.published for i in data.items) == [""] * 6 + ["a high tone"]
    r = ev.evaluate(ToneEmbedder(), data, fusion=0.6, caption_side=FakeCaptions())
    assert r.fused["zero_shot_acc"] == 1.0                              # the one caption fixes the one mistake
    assert r.captions["zero_shot_acc"] == round(1 / 7, 4)              # uncaptioned clips tie: counted wrong


def test_student_bench_loso_table_puts_fused_beside_the_others():
    from benchmarks.student_bench import loso_table
    rows = {"fsdd": {"student": {"clips": 540, "zero_shot_acc": 0.5}, "teacher_captions": {"zero_shot_acc": 0.25},
                     "untrained_prior": {"zero_shot_acc": 0.125},
                     "fused": {"0.5 fixed": {"zero_shot_acc": 0.45}, "0.3": {"zero_shot_acc": 0.55},
                               "0.5": {"zero_shot_acc": 0.6}}},
            "kitchen20": {"student": {"clips": 1070, "zero_shot_acc": 0.6}, "teacher_captions": {"zero_shot_acc": 0.5},
                          "untrained_prior": {"zero_shot_acc": 0.4}}}
    lines = loso_table(rows).splitlines()
    assert lines[1] == ("| left-out set | clips | student | teacher captions | untrained prior | fused 0.3 | fused 0.5 "
                        "| fused 0.5 fixed |")
    assert "| fsdd | 540 | 50.0 | 25.0 | 12.5 | 55.0 | 60.0 | 45.0 |" in lines
    assert "| kitchen20 | 1070 | 60.0 | 50.0 | 40.0 | – | – | – |" in lines     # a report from before fusion
    rows["fsdd"]["student"]["map10"], rows["fsdd"]["fused"]["0.5"]["map10"] = 0.125, 0.5
    mean_ap = loso_table(rows, "map10").splitlines()
    assert "mAP@10" in mean_ap[0] and "| fsdd | 540 | 12.5 | – | – | – | 50.0 | – |" in mean_ap
