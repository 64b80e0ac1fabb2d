"""The Train tab's evidence that training helped: the curves while a run starts, and compare_run
(training/compare.py): a finished run's model against the active one on its held-out recordings."""
from __future__ import annotations

import re

import pytest
import soundfile as sf

from tests.conftest import tone
from tests.test_training import FAST, FREQS
from training.compare import CompareError, compare_run
from ui.train import comparison_markdown, comparison_table, curves


def test_empty_curves_say_starting():
    loss, recall = curves([])
    for fig in (loss, recall):
        assert [a.text for a in fig.layout.annotations] == ["starting…"]


def test_curves_with_data_have_no_starting_note():
    loss, _ = curves([{"kind": "train", "step": 1, "loss": 0.5}])
    assert not loss.layout.annotations


# -- compare_run: a finished run's model against the active model -----------------------------------------
def _tone_folder(folder, meta_rows, header="filename,label"):
    folder.mkdir(parents=True)
    for name, f in ((row.split(",")[0], int(row.split(",")[0][4:-4])) for row in meta_rows):
        sf.write(folder / name, tone(1.5, f, amp=0.25), 16_000)
    (folder / "meta.csv").write_text("\n".join([header, *meta_rows]) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace of eight labelled tone recordings with captions, and one finished 1-epoch CPU run."""
    from core.pipeline.importer import import_paths
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    from training.train import TrainConfig, run_training
    root = tmp_path_factory.mktemp("compare")
    settings = load_settings(workspace=root / "ws", seed_demo=False)
    ws = Workspace(settings.workspace, settings)
    _tone_folder(root / "tones", [f"tone{f}.wav,{'low' if f < 1200 else 'high'}" for f in FREQS])
    assert import_paths(ws, [root / "tones"]).count("imported") == len(FREQS)
    for clip in ws.catalog.clips():
        f = int(ws.catalog.get_recording(clip.recording_id).original_name[4:-4])
        ws.catalog.add_caption(clip.id, f"a steady tone at {f} hertz", "teacher", teacher="test", confidence=0.9)
    result = run_training(ws, TrainConfig.from_dict({**FAST, "epochs": 1}))
    assert result.status == "finished" and result.model_id
    return ws, result, root


def test_compare_reports_both_models_on_the_runs_held_out_split(trained):
    ws, result, _ = trained
    out = compare_run(ws, result.run_id)
    assert out["new_model"] == result.model_id and out["active_model"] != result.model_id
    assert not out["already_active"]
    # the held-out set is the run's own validation split: its model card counted the same pairs
    card = (result.model_path / "README.md").read_text()
    assert re.search(rf"validation pairs\D+{out['pairs']}\b", card), card
    assert 0 < out["pairs"] < 30
    metrics = {(r["set"], r["metric"]) for r in out["rows"]}
    assert {("held-out", "text→audio R@1"), ("held-out", "text→audio R@5")} <= metrics
    for row in out["rows"]:
        assert 0.0 <= row["new"] <= 1.0 and 0.0 <= row["active"] <= 1.0
        assert row["delta"] == pytest.approx(row["new"] - row["active"], abs=1e-4)
    assert out["warning"] == (f"only {out['pairs']} held-out pairs: these numbers are noise; "
                              "pick a labelled folder to compare on")


def test_compare_on_a_labelled_folder_and_after_make_active(trained, tmp_path):
    from core.models.registry import activate, clear_cache
    from training import jobs
    ws, result, _ = trained
    folder = _tone_folder(tmp_path / "labelled", [f"tone{f}.wav,{'low' if f < 1200 else 'high'}"
                                                  for f in (350, 500, 2500, 4000)])
    progress = []
    before = compare_run(ws, result.run_id, folder, progress=lambda d, t, m: progress.append((d, t, m)))
    rows = {r["metric"]: r for r in before["rows"] if r["set"] == str(folder)}
    assert set(rows) == {"zero-shot top-1", "text→audio R@5"}
    assert rows["zero-shot top-1"]["new"] is not None and rows["zero-shot top-1"]["active"] is not None
    # one bar over both models on both sets: it only moves forward, and ends full
    assert [d for d, _, _ in progress] == sorted(d for d, _, _ in progress)
    assert {t for _, t, _ in progress} == {2 * (before["pairs"] + 4)} and progress[-1][0] == progress[-1][1]
    assert any("active model" in m for _, _, m in progress)
    previous = ws.catalog.active_model()
    try:
        jobs.promote(ws, result.run_id)           # what "Make this model active" does
        after = compare_run(ws, result.run_id, folder)
        assert after["already_active"] and after["active_model"] == result.model_id
        assert all(r["delta"] == 0 for r in after["rows"])           # the same model on both sides
    finally:                                      # leave the module's workspace as it was (none: shipped)
        activate(ws, previous.id if previous else "shipped")
        clear_cache()


def test_compare_refuses_a_folder_without_labels(trained, tmp_path):
    ws, result, _ = trained
    captions_only = _tone_folder(tmp_path / "captions", ["tone350.wav,a low tone"], header="filename,caption")
    with pytest.raises(CompareError, match="no labelled audio"):
        compare_run(ws, result.run_id, captions_only)
    unlabelled = _tone_folder(tmp_path / "bare", ["tone350.wav,field notes"], header="filename,notes")
    with pytest.raises(CompareError, match="no audio with a label"):
        compare_run(ws, result.run_id, unlabelled)
    with pytest.raises(CompareError, match="not a folder"):
        compare_run(ws, result.run_id, tmp_path / "nowhere")


@pytest.mark.parametrize("status, words", [("running", "is still running"), ("cancelled", "was cancelled"),
                                           ("failed", "failed")])
def test_a_run_without_a_registered_model_says_why(ws, status, words):
    run = ws.catalog.add_run({**FAST, "epochs": 3})
    ws.catalog.update_run(run.id, status=status)
    with pytest.raises(CompareError, match=f"Run {run.id} {words}") as caught:
        compare_run(ws, run.id)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(CompareError, match=f"no run {run.id + 1}"):
        compare_run(ws, run.id + 1)


def test_the_tab_shows_a_comparison_as_a_table_and_a_warning_line():
    result = {"run": 3, "new_model": "student-new", "active_model": "student-old", "already_active": False,
              "pairs": 4, "recordings": 2, "failed": [], "note": None,
              "warning": "only 4 held-out pairs: these numbers are noise; pick a labelled folder to compare on",
              "rows": [{"set": "held-out", "metric": "text→audio R@1", "new": 0.75, "active": 0.5, "delta": 0.25},
                       {"set": "/data/birds", "metric": "zero-shot top-1", "new": 0.4, "active": 0.45,
                        "delta": -0.05}]}
    table = comparison_table(result)
    assert list(table.columns) == ["set", "metric", "active", "new", "Δ"]
    assert table.values.tolist() == [["held-out (4 pairs)", "text→audio R@1", 0.5, 0.75, "+0.250"],
                                     ["birds", "zero-shot top-1", 0.45, 0.4, "-0.050"]]
    text = comparison_markdown(result)
    assert "`student-new` (new)" in text and "`student-old`" in text
    assert text.endswith("⚠️ **Only 4 held-out pairs: these numbers are noise; pick a labelled folder to compare on.**")
    assert "⚠️" not in comparison_markdown({**result, "warning": None, "pairs": 40})
