"""ui/jobs.py: a session's cancel flag reaches its running job, and is forgotten when the job ends."""
import threading
from types import SimpleNamespace

from ui.jobs import SessionJobs, session_key


def _request(session: str):
    return SimpleNamespace(session_hash=session)


def test_cancel_reaches_the_running_job_and_the_entry_goes_when_it_ends():
    jobs = SessionJobs()
    started, stopped = threading.Event(), threading.Event()

    def job():
        with jobs.running(_request("a")) as flag:
            started.set()
            if flag.wait(5):
                stopped.set()

    worker = threading.Thread(target=job)
    worker.start()
    assert started.wait(5)
    assert len(jobs) == 1
    assert jobs.cancel(_request("b")) == 0          # another session's Cancel stops nothing here
    assert jobs.cancel(_request("a")) == 1
    worker.join(5)
    assert stopped.is_set()
    assert len(jobs) == 0                           # nothing kept once the job ended


def test_entry_dropped_when_the_job_fails_and_a_new_job_starts_uncancelled():
    jobs = SessionJobs()
    try:
        with jobs.running(_request("a")):
            raise RuntimeError("import failed")
    except RuntimeError:
        pass
    assert len(jobs) == 0
    assert jobs.cancel(_request("a")) == 0          # pressed while nothing runs: a no-op
    with jobs.running(_request("a")) as flag:
        assert not flag.is_set()


def test_two_jobs_of_one_session_both_hear_cancel():
    jobs = SessionJobs()
    with jobs.running(_request("a")) as first, jobs.running(_request("a")) as second:
        assert jobs.cancel(_request("a")) == 2
        assert first.is_set() and second.is_set()
    assert len(jobs) == 0


def test_session_key_without_a_request():
    assert session_key(None) == "cli"
    assert session_key(_request("abc")) == "abc"
