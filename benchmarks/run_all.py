"""Run every `benchmarks/*_bench.py` (and review_gain.py) and print one table (and JSON) with the machine's description.

    python -m benchmarks [--full] [--only import teacher] [--timeout 900] [--markdown] [--out report.json]

Each script runs in its own process (a crash or a hang costs only its own row), with `--quick`
when its source mentions that flag (unless --full). Its last stdout line that parses as a JSON
object is its result; scripts that print none still get a row with their last output line.
The final line printed is one JSON object: {"machine": {...}, "benchmarks": [...]}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


EXTRA = ["review_gain.py"]          # benchmarks whose name does not end in _bench


def discover(only: list[str] | None = None) -> list[Path]:
    scripts = sorted([*HERE.glob("*_bench.py"), *(HERE / n for n in EXTRA if (HERE / n).exists())])
    if only:
        scripts = [s for s in scripts if s.stem.removesuffix("_bench") in only or s.stem in only]
    return scripts


def supports_quick(script: Path) -> bool:
    return "--quick" in script.read_text(encoding="utf-8", errors="replace")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        import psutil
        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        return round(kb / 2**20, 1)
    except (OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the numbers were measured on (no torch import: its version comes from the metadata)."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(), "ram_gb": _ram_gb(), "gpus": _gpus(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "torch": _version("torch"), "onnxruntime": _version("onnxruntime"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def last_json_object(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_one(script: Path, quick: bool, timeout: float) -> dict:
    args = [sys.executable, str(script)] + (["--quick"] if quick else [])
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        status = f"timeout after {timeout:.0f} s"
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds = round(time.perf_counter() - started, 1)
    result = last_json_object(stdout)
    row = {"name": script.stem.removesuffix("_bench"), "script": script.name, "quick": quick,
           "status": status, "seconds": seconds, "result": result}
    if result is None or status != "ok":
        tail = (stdout.strip().splitlines() or [""])[-1] if status == "ok" else (stderr or stdout).strip()[-800:]
        row["tail"] = tail
    return row


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def figures(row: dict) -> str:
    """The row's flat figures as `key=value` pairs (nested details stay in the JSON only)."""
    if row["result"] is None:
        return row.get("tail", "")[:120]
    return "  ".join(f"{k}={_fmt(v)}" for k, v in row["result"].items()
                     if k != "bench" and not isinstance(v, (dict, list)))


def table(rows: list[dict], info: dict, markdown: bool = False) -> str:
    head = (f"{info['cpu']}, {info['usable_cores']}/{info['cores']} cores, {info['ram_gb']} GiB RAM, "
            f"torch {info['torch']}, Python {info['python']}" + (f", GPU {'; '.join(info['gpus'])}" if info['gpus']
                                                                  else ", no GPU"))
    if markdown:
        lines = [f"Measured on: {head}", "", "| benchmark | mode | status | seconds | figures |",
                 "|---|---|---|---:|---|"]
        lines += [f"| {r['name']} | {'quick' if r['quick'] else 'full'} | {r['status']} | {r['seconds']} | "
                  f"{figures(r).replace('|', '/')} |" for r in rows]
        return "\n".join(lines)
    width = max([len(r["name"]) for r in rows] + [9])
    lines = [f"machine: {head}", "", f"{'benchmark':{width}}  {'mode':5}  {'status':10}  {'seconds':>7}  figures"]
    lines += [f"{r['name']:{width}}  {'quick' if r['quick'] else 'full':5}  {r['status']:10}  {r['seconds']:7.1f}  "
              f"{figures(r)}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="never pass --quick")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these (e.g. import teacher)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per script before it is stopped")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--list", action="store_true", help="list the scripts and exit")
    args = p.parse_args(argv)
    scripts = discover(args.only)
    if args.list or not scripts:
        for s in scripts:
            print(f"{s.name}{'  (--quick)' if supports_quick(s) else ''}")
        return 0 if scripts else 1
    rows = []
    for script in scripts:
        quick = not args.full and supports_quick(script)
        print(f"running {script.name}{' --quick' if quick else ''} …", file=sys.stderr, flush=True)
        rows.append(run_one(script, quick, args.timeout))
        print(f"  {rows[-1]['status']} in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    info = machine()
    report = {"machine": info, "benchmarks": rows}
    print(table(rows, info, markdown=args.markdown))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, ensure_ascii=False))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
