"""benchmarks/run_all.py: one table from many scripts, tolerant of scripts that fail or print no JSON."""
from __future__ import annotations

import json

from benchmarks import run_all


def test_last_json_object_skips_noise():
    out = 'warming up\n{"bench": "x", "n": 1}\n{not json}\nbye\n'
    assert run_all.last_json_object(out) == {"bench": "x", "n": 1}
    assert run_all.last_json_object("no json here\n") is None


def test_run_one_collects_json_failures_and_quick_flag(tmp_path):
    good = tmp_path / "good_bench.py"
    good.write_text('import json, sys\nprint("table")\nprint(json.dumps({"bench": "good", "quick": "--quick" in sys.argv}))\n')
    bad = tmp_path / "bad_bench.py"
    bad.write_text('print("half a table")\nraise SystemExit(3)\n')
    assert run_all.supports_quick(good) and not run_all.supports_quick(bad)
    row = run_all.run_one(good, quick=True, timeout=60)
    assert row["status"] == "ok" and row["result"] == {"bench": "good", "quick": True}
    row_bad = run_all.run_one(bad, quick=False, timeout=60)
    assert row_bad["status"] == "failed (exit 3)" and row_bad["result"] is None and "half a table" in row_bad["tail"]
    text = run_all.table([row, row_bad], run_all.machine())
    assert "cores" in text and "quick=True" in text and "failed (exit 3)" in text
    json.dumps(run_all.machine())                      # the machine description is plain JSON


def test_student_bench_folds_keep_groups_together_and_hold_every_clip_out_once(shared_data):
    """The `cv` protocol: each evaluation clip in exactly one fold, a Freesound source never in two,
    every fsdd speaker in every fold (folds are by recording number), training-only sets in none."""
    import csv
    from collections import defaultdict
    from benchmarks.student_bench import EVAL_SETS, Item, cv_fold
    items = []
    for name in EVAL_SETS + ["ovos_animals"]:
        for row in csv.DictReader(open(shared_data / name / "meta.csv", newline="", encoding="utf-8")):
            group = row.get("freesound_or_source_id") or row.get("uuid") or row["filename"]
            items.append(Item(name, row["filename"], shared_data / name / "audio" / row["filename"],
                              row.get("label"), group, row.get("split", "")))
    folds = {(it.set, it.filename): cv_fold(it) for it in items}
    assert all(folds[(it.set, it.filename)] is None for it in items if it.set == "ovos_animals")
    assert all(folds[(it.set, it.filename)] in (0, 1, 2) for it in items if it.set in EVAL_SETS)
    sources = defaultdict(set)
    for it in items:
        if it.set == "kitchen20":
            sources[it.group].add(folds[(it.set, it.filename)])
    assert max(len(f) for f in sources.values()) == 1
    speakers = defaultdict(set)
    for it in items:
        if it.set == "fsdd":
            speakers[it.filename.split("_")[1]].add(folds[(it.set, it.filename)])
    assert all(f == {0, 1, 2} for f in speakers.values())
    for name in EVAL_SETS:                      # no fold is empty or holds nearly everything
        sizes = [sum(1 for it in items if it.set == name and folds[(it.set, it.filename)] == k) for k in range(3)]
        assert min(sizes) > 0.15 * sum(sizes)


def test_load_bench_is_run_by_the_runner_and_asks_different_queries():
    assert "load_bench" in {s.stem for s in run_all.discover()}
    assert run_all.supports_quick(run_all.HERE / "load_bench.py")
    from benchmarks.load_bench import choice, percentiles, query_texts
    texts = query_texts(300)                       # 20 clients × 15: no query answered from a cache
    assert len(texts) == len(set(texts)) == 300
    assert percentiles([1.0, 2.0, 3.0, 4.0])["p50_s"] == 2.5 and percentiles([]) == {}
    param = {"python_type": {"type": "Literal['clips without a caption', 'all clips (cached)']"},
             "parameter_default": "clips without a caption"}
    assert choice(param, "all clips") == "all clips (cached)" and choice(param, "none") == "clips without a caption"
