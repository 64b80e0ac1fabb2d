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
