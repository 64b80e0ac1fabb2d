"""The student in PyTorch next to its ONNX export in onnxruntime, on 2 CPU threads.

    python -m benchmarks.onnx_bench [--quick] [--model shipped|PATH] [--threads 2]

Measures what search pays per query and what indexing pays per clip:
- text: one query at a time (ms, median), and a batch of 64 captions (texts/s);
- audio: real 16 kHz clips from assets/demo end to end (front end + tagger + head, clips/s), and the
  trainable head alone on precomputed features (ms per batch of 32) — the part the export replaces;
plus the cosine agreement of the two runtimes on those clips and texts.

The model is exported to a scratch folder (the checkpoint is not touched). Without a shipped
student, a freshly initialised one with randomised weights stands in (same architecture and cost).
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _paired(a, b, repeat: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, called alternately (a shared, busy machine drifts: both see it)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def stand_in_student(folder: Path) -> Path:
    import torch
    from core.models.student import Student
    torch.manual_seed(0)
    model = Student()
    with torch.no_grad():      # give the zero-initialised layers weights, so the head does real work
        for name, p in model.named_parameters():
            if name != "prior":
                p.add_(0.05 * torch.randn_like(p))
    model.save(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    try:
        return run(scratch, argv)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)       # the export is ~95 MB


def run(scratch: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shipped", help="'shipped' or a checkpoint folder")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (torch and onnxruntime)")
    parser.add_argument("--quick", action="store_true", help="fewer clips and repeats")
    args = parser.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from core.models import registry as models
    from core.models.onnx_student import OnnxStudent
    from core.models.student import Student, collate_features
    from training.export_onnx import _cosines, demo_texts, demo_waves, export

    try:
        folder = models.resolve_path(args.model)
        which = args.model
    except (KeyError, FileNotFoundError):
        folder, which = stand_in_student(scratch / "student"), "fresh student (no shipped one yet)"
    student = Student.load(folder)
    n_clips, repeat = (16, 5) if args.quick else (48, 20)
    waves = demo_waves(limit=n_clips)
    texts = demo_texts()
    report = export(student, scratch / "onnx", waves=waves[:8], texts=texts[:16])
    runtime = OnnxStudent(scratch / "onnx", threads=args.threads)

    query = ["a dog barking in the distance"]
    student.embed_text(query), runtime.embed_text(query)          # warm up both
    torch_query, onnx_query = _paired(lambda: student.embed_text(query), lambda: runtime.embed_text(query),
                                      repeat * 3)
    captions = (texts * 4)[:64]
    torch_texts, onnx_texts = (len(captions) / t for t in _paired(
        lambda: student.embed_text(captions), lambda: runtime.embed_text(captions), max(3, repeat // 4)))
    batch = collate_features(student.features(waves[:32]))
    arrays = {k: v.numpy() for k, v in batch.items()}
    with torch.no_grad():
        torch_head, onnx_head = _paired(lambda: student.forward_audio(**batch), lambda: runtime.audio_head(arrays),
                                        repeat)
    torch_audio, onnx_audio = (len(waves) / t for t in _paired(
        lambda: student.embed_audio(waves), lambda: runtime.embed_audio(waves), 3))
    audio_cos = _cosines(student.embed_audio(waves), runtime.embed_audio(waves))
    text_cos = _cosines(student.embed_text(texts), runtime.embed_text(texts))

    size_mb = {p.name: round(p.stat().st_size / 1e6, 1) for p in (scratch / "onnx").glob("*.onnx")}
    rows = [("text: one query (ms)", torch_query * 1e3, onnx_query * 1e3, torch_query / onnx_query),
            ("text: batch of 64 (texts/s)", torch_texts, onnx_texts, onnx_texts / torch_texts),
            ("audio head: batch of 32 (ms)", torch_head * 1e3, onnx_head * 1e3, torch_head / onnx_head),
            (f"audio end to end: {len(waves)} clips (clips/s)", torch_audio, onnx_audio, onnx_audio / torch_audio)]
    print(f"model: {which} ({student.model_id}); {args.threads} threads; export {size_mb} MB; "
          f"export check: {report.summary()}")
    print(f"{'':46s} {'PyTorch':>10s} {'ONNX':>10s} {'speed-up':>9s}")
    for name, a, b, s in rows:
        print(f"{name:46s} {a:10.1f} {b:10.1f} {s:8.2f}×")
    print(f"cosine agreement: audio min {audio_cos.min():.6f} ({len(waves)} clips), "
          f"text min {text_cos.min():.6f} ({len(texts)} texts)")
    print(json.dumps({
        "benchmark": "onnx", "model": student.model_id, "threads": args.threads, "clips": len(waves),
        "text_query_ms": {"torch": round(torch_query * 1e3, 2), "onnx": round(onnx_query * 1e3, 2)},
        "text_batch64_per_s": {"torch": round(torch_texts, 1), "onnx": round(onnx_texts, 1)},
        "audio_head_batch32_ms": {"torch": round(torch_head * 1e3, 2), "onnx": round(onnx_head * 1e3, 2)},
        "audio_clips_per_s": {"torch": round(torch_audio, 1), "onnx": round(onnx_audio, 1)},
        "cosine_min": {"audio": round(float(audio_cos.min()), 6), "text": round(float(text_cos.min()), 6)},
        "export_mb": size_mb}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
