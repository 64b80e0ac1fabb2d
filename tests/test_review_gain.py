"""benchmarks/review_gain.py: variants parse, and the --quick smoke run reviews every clip by "all"."""
from __future__ import annotations

import json

from benchmarks import review_gain as rg
from benchmarks import run_all
from training.train import label_prompt


def test_variants_parse_json_values():
    assert rg.parse_variant("a2nt:anchor=2,train_text_proj=false,loss=soft") == \
        ("a2nt", {"anchor": 2, "train_text_proj": False, "loss": "soft"})
    assert rg.parse_variant("recipe") == ("recipe", {})
    assert "review_gain" in {s.stem for s in run_all.discover()}


def test_quick_run_reviews_nested_clips_and_scores_every_set(shared_data, tmp_path, capsys):
    assert rg.main(["--quick", "--work", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = {r["reviewed"]: r for r in report["runs"]}
    assert set(runs) == {"0", "all"}
    assert runs["0"]["reviewed_clips"] == 0 and runs["all"]["reviewed_clips"] == report["train_clips"]
    for row in [report["prior"], *runs.values()]:
        assert set(row) >= {"in_domain", "ood_mean", *rg.OUT_OF_DOMAIN}
        assert all(0.0 <= row[k] <= 1.0 for k in ["in_domain", *rg.OUT_OF_DOMAIN])
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    root = tmp_path / "ws-review-0"                          # seed 0's workspace holds the simulated edits
    cat = Workspace(root, load_settings(workspace=root, seed_demo=False)).catalog
    edited = cat.clip_ids_by_status("edited")
    assert len(edited) == report["train_clips"]
    caption = cat.current_captions([edited[0]])[edited[0]]
    label = cat.get_recording(cat.get_clip(edited[0]).recording_id).meta["label"]
    assert caption.origin == "annotator" and caption.text == label_prompt(label)


def test_student_bench_loso_headline_puts_the_prior_beside_student_and_captions():
    from benchmarks.student_bench import loso_table
    rows = {"fsdd": {"student": {"clips": 540, "zero_shot_acc": 0.5}, "teacher_captions": {"zero_shot_acc": 0.25},
                     "untrained_prior": {"zero_shot_acc": 0.125}},
            "kitchen20": {"student": {"clips": 1070, "zero_shot_acc": 0.6}, "teacher_captions": {"zero_shot_acc": 0.5}}}
    lines = loso_table(rows).splitlines()
    assert lines[1].startswith("| left-out set | clips | student | teacher captions | untrained prior |")
    assert "| fsdd | 540 | 50.0 | 25.0 | 12.5 |" in lines
    assert "| kitchen20 | 1070 | 60.0 | 50.0 | – |" in lines          # an older report without the prior
