"""Load benchmark: many people searching the running app while an annotator's caption job runs.

    python benchmarks/load_bench.py [--clips 1000] [--clients 20] [--queries 15] [--caption-clips 300]
                                    [--workspace DIR] [--quick] [--json-out FILE]

1. A workspace: `--clips N` imports the first N kitchen20 clips (../shared/data/kitchen20) into a
   temporary workspace, else the bundled demo clips (`--workspace DIR` uses an existing one as is);
   it is indexed with the active model before the app starts (indexing is not what is measured).
2. The app (`python app.py`) starts in its own process on a free loopback port, in visitor mode,
   with one annotator account made up for the run.
3. The annotator signs in and starts a caption job through the app's API (`/captions_run`,
   embedded teacher, `--caption-clips` clips re-captioned), and at the same time M anonymous
   clients each run Q text searches (`/search_text`, one after the other, every query text
   different) through Gradio's HTTP API, while a probe loads the page (`GET /`) every second.
4. It prints search latency p50/p95/p99/max, searches per second and errors (a table, then one
   JSON line), the page-load times and the caption job's time, stops the app and cleans up.

Target (issue 13): 20 clients on 1k clips, p95 ≤ 1.5 s per search, 0 errors, on 2 CPU cores.
Everything stays on 127.0.0.1; requests are bounded (M × Q searches) and each has a timeout.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

# search_bench also sets the offline / passive-OpenMP environment the app's subprocess inherits
from benchmarks.search_bench import QUERIES, SHARED_DATA  # noqa: E402
REQUEST_TIMEOUT = 120.0            # seconds one search may take before it counts as an error
START_TIMEOUT = 180.0              # seconds the app may take to answer its first page
SEARCH = "search_text"
TARGET_P95_S = 1.5
FULL = {"clips": 1000, "clients": 20, "queries": 15, "caption_clips": 300}
QUICK = {"clips": 0, "clients": 4, "queries": 5, "caption_clips": 20}


# -- the workspace -----------------------------------------------------------------------------------------
def prepare_workspace(root: Path, clips: int) -> Path:
    """A new workspace with the demo clips, or the first `clips` kitchen20 clips; indexed."""
    from core.pipeline import index
    from core.pipeline.importer import import_paths, seed_demo
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    settings = load_settings(workspace=root / "ws", seed_demo=False, chroma_mode="embedded")
    ws = Workspace(settings.workspace, settings)
    if clips:
        report = import_paths(ws, [kitchen20_subset(root / "kitchen20", clips)])
        print(f"[load] imported {report.count('imported')} kitchen20 recordings", file=sys.stderr, flush=True)
    else:
        seed_demo(ws)
    started = time.perf_counter()
    report = index.sync(ws, index.resolve_embedder(ws, "active"))
    print(f"[load] indexed: {report.summary()} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    return ws.root


def kitchen20_subset(folder: Path, n: int) -> Path:
    """The first n kitchen20 files (and their meta.csv rows), linked into `folder`."""
    import csv
    source = SHARED_DATA / "kitchen20"
    if not source.is_dir():
        raise SystemExit(f"{source} not found: run without --clips (the demo clips) or give --workspace")
    with open(source / "meta.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    (folder / "audio").mkdir(parents=True)
    for row in rows:
        (folder / "audio" / row["filename"]).symlink_to(source / "audio" / row["filename"])
    with open(folder / "meta.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


# -- the app -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(workspace: Path, port: int, password: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HEARSAY_VISITOR_MODE": "1", "HEARSAY_USERS": f"bench:{password}:annotator",
           "PYTHONPATH": str(ROOT)}
    env.pop("SPACE_ID", None)
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--workspace", str(workspace), "--host",
                                 "127.0.0.1", "--port", str(port), "--no-seed"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(url: str, app: subprocess.Popen, log_path: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < START_TIMEOUT:
        if app.poll() is not None:
            raise SystemExit(f"the app exited ({app.returncode}):\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the app did not answer within {START_TIMEOUT:.0f} s:\n{log_path.read_text()[-2000:]}")


def stop_app(app: subprocess.Popen) -> None:
    app.terminate()
    try:
        app.wait(timeout=20)
    except subprocess.TimeoutExpired:
        app.kill()
        app.wait()


# -- Gradio's HTTP API: POST /gradio_api/call/<name>, then read the event stream to its end ------------------
def call(http: httpx.Client, url: str, api_name: str, data: list, session: str | None = None,
         timeout: float = REQUEST_TIMEOUT):
    """The event's output list; raises RuntimeError on an error event or a stream that ends without one.

    `session`: a session hash kept across calls, as a browser tab keeps one (a call without one makes
    Gradio set up a new session, a copy of every component's config: ~0.1 s in this app)."""
    body = {"data": data, **({"session_hash": session} if session else {})}
    posted = http.post(f"{url}gradio_api/call/{api_name}", json=body, timeout=timeout)
    posted.raise_for_status()
    event_id = posted.json()["event_id"]
    event = None
    with http.stream("GET", f"{url}gradio_api/call/{api_name}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = line.split(":", 1)[1].strip()
                if event == "error":
                    raise RuntimeError(f"{api_name}: {payload[:300]}")
                return json.loads(payload)
    raise RuntimeError(f"{api_name}: the stream ended without a result")


def parameters(url: str, api_name: str, http: httpx.Client) -> list[dict]:
    """The endpoint's parameters as /gradio_api/info describes them, in order."""
    return http.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"][f"/{api_name}"]["parameters"]


def choice(param: dict, starts: str):
    """The first of a parameter's choices (its Literal[...] type) that starts with `starts`, else its default."""
    import re
    options = re.findall(r"'([^']*)'", str(param.get("python_type", {}).get("type", "")))
    return next((o for o in options if o.startswith(starts)), param.get("parameter_default"))


def caption_job(url: str, password: str, clips: int, result: dict) -> None:
    """Sign in as the annotator and re-caption `clips` clips with the embedded teacher, through the app."""
    started = time.perf_counter()
    try:
        with httpx.Client() as http:
            http.post(f"{url}login", data={"username": "bench", "password": password}, timeout=30).raise_for_status()
            params = parameters(url, "captions_run", http)
            args = {p["parameter_name"]: p.get("parameter_default") for p in params}
            chosen = next(p for p in params if p["parameter_name"] == "chosen")
            # every clip (not only uncaptioned ones), cache ignored: the job really runs the teacher
            args.update(name="embedded", chosen=choice(chosen, "all clips"), limit_v=clips, force_v=True)
            out = call(http, url, "captions_run", list(args.values()), secrets.token_hex(8), timeout=1800)
            result["summary"] = str(out[0]).strip("*")
    except Exception as exc:  # noqa: BLE001 - reported in the results, the searches go on
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
    result["ended"] = time.perf_counter()
    result["seconds"] = round(result["ended"] - started, 1)


def query_texts(n: int) -> list[str]:
    """n different query texts (pairs of sound descriptions), so no query is answered from a cache."""
    pairs = (f"{a} and {b}" for a, b in itertools.permutations(QUERIES, 2))
    return list(itertools.islice(itertools.chain(QUERIES, pairs), n))


def client(url: str, queries: list[str]) -> list[tuple[float, str | None, float]]:
    """One visitor (one browser tab: one session) searching, one query after the other:
    (seconds, error or None, when it started) per search."""
    out = []
    session = secrets.token_hex(8)
    with httpx.Client() as http:
        for q in queries:
            started = time.perf_counter()
            try:
                got = call(http, url, SEARCH, ["active", q, 0.0, [], [], [], None, None, None, None, None], session)
                error = None if got and got[0].get("hits") else "no hits"
            except Exception as exc:  # noqa: BLE001 - counted, never fatal
                error = f"{type(exc).__name__}: {exc}"[:200]
            out.append((time.perf_counter() - started, error, started))
    return out


def page_probe(url: str, stop: threading.Event, seconds: list[float]) -> None:
    with httpx.Client() as http:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                http.get(url, timeout=30)
                seconds.append(time.perf_counter() - started)
            except httpx.HTTPError:
                seconds.append(float("inf"))
            stop.wait(1.0)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, waited-for children) CPU seconds of a process, from /proc (zeros where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=float)
    if not len(a):
        return {}
    return {"p50_s": round(float(np.percentile(a, 50)), 3), "p95_s": round(float(np.percentile(a, 95)), 3),
            "p99_s": round(float(np.percentile(a, 99)), 3), "max_s": round(float(a.max()), 3)}


def run_load(url: str, password: str, clients: int, queries: int, caption_clips: int, app_pid: int) -> dict:
    texts = query_texts(clients * queries)
    # warm-up: the first search loads the model in the app process; not a user's wait worth measuring
    with httpx.Client() as http:
        call(http, url, SEARCH, ["active", "warm up", 0.0, [], [], [], None, None, None, None, None])
    job: dict = {}
    caption = threading.Thread(target=caption_job, args=(url, password, caption_clips, job), daemon=True)
    stop, page_seconds = threading.Event(), []
    probe = threading.Thread(target=page_probe, args=(url, stop, page_seconds), daemon=True)
    if caption_clips:
        caption.start()
    probe.start()
    cpu_before, own_before = cpu_seconds(app_pid), os.times()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: client(url, texts[i * queries:(i + 1) * queries]), range(clients)))
    wall = time.perf_counter() - started
    cpu_after, own_after = cpu_seconds(app_pid), os.times()
    stop.set()
    probe.join()
    if caption_clips:
        caption.join(timeout=1800)
    samples = [s for r in results for s, _, _ in r]
    errors = [e for r in results for _, e, _ in r if e]
    during = [s for r in results for s, _, t in r if t < job.get("ended", started)]
    return {"bench": "load", "clients": clients, "searches": len(samples), "errors": len(errors),
            "qps": round(len(samples) / wall, 2), **percentiles(samples), "wall_s": round(wall, 1),
            "app_cpu_s": round(cpu_after[0] - cpu_before[0], 1),      # the caption job's share included
            "app_children_cpu_s": round(cpu_after[1] - cpu_before[1], 1),   # e.g. ffprobe processes
            "clients_cpu_s": round(own_after.user + own_after.system - own_before.user - own_before.system, 1),
            "searches_during_caption": len(during), "p95_during_caption_s": percentiles(during).get("p95_s"),
            "page_p50_s": percentiles(page_seconds).get("p50_s"), "page_max_s": percentiles(page_seconds).get("max_s"),
            "caption_clips": caption_clips, "caption_s": job.get("seconds"),
            "caption_error": job.get("error"), "caption_summary": job.get("summary"),
            "p95_target_met": bool(samples) and not errors and percentiles(samples)["p95_s"] <= TARGET_P95_S,
            "first_errors": sorted(set(errors))[:3]}


def table(r: dict) -> str:
    rows = [("clients × searches", f"{r['clients']} × {r['searches'] // max(r['clients'], 1)}"),
            ("clips in the workspace", r.get("clips")),
            ("search p50 / p95 / p99 / max (s)", f"{r.get('p50_s')} / {r.get('p95_s')} / {r.get('p99_s')} / "
                                                 f"{r.get('max_s')}"),
            ("searches per second", r["qps"]), ("errors", r["errors"]),
            ("CPU (s): app / its child processes / clients",
             f"{r['app_cpu_s']} / {r['app_children_cpu_s']} / {r['clients_cpu_s']}"),
            ("page load p50 / max (s)", f"{r['page_p50_s']} / {r['page_max_s']}"),
            ("caption job", f"{r['caption_clips']} clips in {r['caption_s']} s; {r['searches_during_caption']} "
                            f"searches meanwhile, p95 {r['p95_during_caption_s']} s" if not r["caption_error"]
             else r["caption_error"]),
            (f"p95 ≤ {TARGET_P95_S} s and 0 errors", "yes" if r["p95_target_met"] else "no")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, help="kitchen20 clips to import, 0: the demo clips (default 1000)")
    p.add_argument("--clients", type=int, help="concurrent searching clients (default 20)")
    p.add_argument("--queries", type=int, help="searches per client (default 15)")
    p.add_argument("--caption-clips", type=int, help="clips the caption job re-captions, 0: no job (default 300)")
    p.add_argument("--workspace", help="use this (indexed) workspace instead of a new one")
    p.add_argument("--quick", action="store_true", help="defaults become: demo clips, 4 clients × 5 searches, "
                                                        "20 clips captioned")
    p.add_argument("--json-out", help="also write the result here")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    tmp = Path(tempfile.mkdtemp(prefix="hearsay-load-"))
    app = None
    try:
        workspace = Path(args.workspace) if args.workspace else prepare_workspace(tmp, args.clips)
        password, port = secrets.token_urlsafe(12), free_port()
        url = f"http://127.0.0.1:{port}/"
        app = start_app(workspace, port, password, tmp / "app.log")
        startup = wait_until_up(url, app, tmp / "app.log")
        print(f"[load] app up in {startup:.1f} s; {args.clients} clients × {args.queries} searches"
              f"{f', captioning {args.caption_clips} clips' if args.caption_clips else ''}", file=sys.stderr, flush=True)
        result = run_load(url, password, args.clients, args.queries, args.caption_clips, app.pid)
        from core.store.settings import load_settings
        from core.store.workspace import Workspace
        settings = load_settings(workspace=workspace, seed_demo=False)
        result["clips"] = Workspace(settings.workspace, settings).catalog.stats().clips
        result["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    finally:
        if app is not None:
            stop_app(app)
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 and not result["caption_error"] else 1


if __name__ == "__main__":
    sys.exit(main())
