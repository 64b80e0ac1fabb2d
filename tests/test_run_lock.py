"""One live process per training run: a second `--resume` is refused; stale `running` rows are closed."""
from __future__ import annotations

import pytest

from core.cli import train as cli_train
from training import jobs


def test_a_second_resume_of_a_live_run_is_refused(ws, capsys):
    run = ws.catalog.add_run({"epochs": 1})
    folder = jobs.run_dir(ws, run.id)
    folder.mkdir(parents=True)
    with jobs.run_lock(folder):
        with pytest.raises(jobs.RunBusy, match="already"):
            with jobs.run_lock(folder):
                pass
        rc = cli_train.main(["--workspace", str(ws.root), "--resume", "--run-dir", str(folder)])
        assert rc != 0
        err = capsys.readouterr().err
        assert "already" in err and "Traceback" not in err
    with jobs.run_lock(folder):          # released with its holder
        pass


def test_train_cli_marks_runs_of_dead_processes_failed(ws, capsys):
    run = ws.catalog.add_run({"epochs": 1})
    ws.catalog.update_run(run.id, status="running", pid=2**22 + 12345)        # killed with -9 long ago
    assert cli_train.main(["--workspace", str(ws.root), "--resume"]) == 2          # nothing to resume
    assert ws.catalog.get_run(run.id).status == "failed"
