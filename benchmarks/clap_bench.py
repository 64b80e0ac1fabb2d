"""Pretrained-backbone students (issue 17): clips/s and peak memory of one training step and of indexing,
per kind (clap, combine) and size.

    python -m benchmarks.clap_bench [--quick] [--kinds clap combine] [--sizes tiny real] [--batch 8]
                                    [--device cpu|cuda] [--json out.json]

Models are random weights built from configs, so nothing is downloaded and the compute per clip is the
real one: clap `tiny` / `real` (= laion/clap-htsat-unfused's architecture; training/clap_configs.py),
combine `tiny` (training/combine_configs.py) / `real` (wav2vec2-base's architecture + the packaged
MiniLM). Clips are 5 s of 16 kHz noise-and-tone, as the app indexes them.

- train step: one AdamW step of the InfoNCE + distill loss on a batch (feature extraction and
  tokenising included, as the DataLoader does it), after one warm-up step; bf16 autocast on CUDA;
- indexing: `ClapStudent.embed_audio` over `--clips` clips (resampling + features + audio tower).
Indexing runs first, on the fresh model. Peak memory: the growth during the phase (`*_peak_mb`) and
the highest total (`*_top_mb`, the process with Python, torch and the model loaded): resident set on a
CPU (sampled every 2 ms), torch.cuda.max_memory_allocated on a GPU. `--quick` runs the tiny size only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory growth (bytes) while the block runs."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self._stop = _rss(), threading.Event()
        self._top = self.base

        def watch():
            while not self._stop.wait(0.002):
                self._top = max(self._top, _rss())
        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.top = torch.cuda.max_memory_allocated()
            self.peak = self.top - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.top = max(self._top, _rss())
            self.peak = self.top - self.base


def clips(n: int, seconds: float = 5.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return [(0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t))
            .astype(np.float32) for _ in range(n)]


def build(kind: str, size: str, work: Path):
    """A random student of that kind and size (see the module docstring)."""
    from core.models.clap_student import _quiet_transformers
    _quiet_transformers()
    if kind == "clap":
        from core.models.clap_student import ClapStudent
        from training.clap_configs import clap_parts
        return ClapStudent(*clap_parts(size), {"base_model": f"random-{size}"})
    from core.models.combine_student import MINILM, CombineStudent, _load_encoder, _load_text, locate_text
    from training.combine_configs import build_audio_encoder_folder, build_sentence_folder
    if size == "tiny":
        audio_dir, text_dir = build_audio_encoder_folder(work / "w2v"), str(build_sentence_folder(work / "st"))
    else:                          # wav2vec2-base's shapes (the config defaults) + the packaged MiniLM
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
        audio_dir = work / "w2v-base"
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(audio_dir)
        Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(audio_dir)
        text_dir = locate_text(MINILM)
    encoder, features = _load_encoder(str(audio_dir))
    return CombineStudent(encoder, features, _load_text(text_dir), {"base_model": f"random-{size}"})


def bench_size(kind: str, size: str, device: str, batch: int, n_index: int, steps: int) -> dict:
    import tempfile

    import torch

    from training.losses import make_loss
    from training.train_clap import Collate, enable_checkpointing
    with tempfile.TemporaryDirectory() as work:
        student = build(kind, size, Path(work)).to(device)
    params = sum(p.numel() for p in student.parameters())
    if device == "cuda":
        enable_checkpointing(student)
    collate = Collate(student)
    captions = ["a dog barks", "a low hum", "rain sounds", "a car engine", "a siren", "a bird sings"]
    items = [{"wave": w, "caption": captions[i % len(captions)], "weight": 1.0, "seed": i}
             for i, w in enumerate(clips(batch, seed=1))]
    loss_fn = make_loss("infonce", distill=1.0)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()

    def step():
        b = collate(items)
        inputs = to_device(b["inputs"], device)
        with autocast:
            audio, text, scale = student(**inputs)
            loss = loss_fn(audio, text, scale, None, b["weight"].to(device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()

    waves = clips(n_index, seed=2)
    student.embed_audio(waves[:2])                               # warm-up
    with PeakMemory(device) as mem_index:
        t0 = time.perf_counter()
        student.embed_audio(waves)
        index_s = time.perf_counter() - t0
    student.train()
    step()                                                       # warm-up: allocator, optimizer state
    with PeakMemory(device) as mem_train:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        train_s = (time.perf_counter() - t0) / steps
    return {"kind": kind, "size": size, "device": device, "params_m": round(params / 1e6, 2), "batch": batch,
            "train_clips_per_s": round(batch / train_s, 2), "train_step_s": round(train_s, 3),
            "train_peak_mb": round(mem_train.peak / 2**20, 1),
            "index_clips": n_index, "index_clips_per_s": round(n_index / index_s, 2),
            "index_peak_mb": round(mem_index.peak / 2**20, 1),
            "train_top_mb": round(mem_train.top / 2**20, 1), "index_top_mb": round(mem_index.top / 2**20, 1)}


def to_device(inputs: dict, device: str) -> dict:
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in inputs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clap_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny size only")
    p.add_argument("--kinds", nargs="+", default=["clap", "combine"], choices=["clap", "combine"])
    p.add_argument("--sizes", nargs="+", default=["tiny", "real"], choices=["tiny", "real"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--clips", type=int, help="clips to index (default 64 tiny, 16 real on CPU, 512 on CUDA)")
    p.add_argument("--steps", type=int, help="timed training steps (default 5 tiny, 2 real)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    from core.store.settings import resolve_device
    device = resolve_device(args.device)
    sizes = ["tiny"] if args.quick else args.sizes
    rows = []
    for kind, size in [(k, z) for k in args.kinds for z in sizes]:
        n_index = args.clips or (512 if device == "cuda" else 64 if size == "tiny" else 16)
        steps = args.steps or (5 if size == "tiny" else 2)
        rows.append(bench_size(kind, size, device, args.batch, n_index, steps))
        r = rows[-1]
        print(f"{kind:7s} {size:5s} {r['params_m']:7.2f} M params on {device}: train step {r['train_clips_per_s']:8.2f} clips/s "
              f"(batch {r['batch']}, peak +{r['train_peak_mb']} MB, {r['train_top_mb']} MB in all); indexing "
              f"{r['index_clips_per_s']:8.2f} clips/s (5 s clips, peak +{r['index_peak_mb']} MB, {r['index_top_mb']} MB in all)", flush=True)
    result = {"bench": "clap", "device": device, "torch_threads": __import__("torch").get_num_threads(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
