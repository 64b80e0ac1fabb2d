"""ONNX export of the students built on pretrained models (`clap`, `combine`; issue 17), with the same
parity check and the same `onnx_config.json` rule as the embedded student (training/export_onnx.py).

Two graphs in `<checkpoint>/onnx/`, read by core.models.onnx_student.OnnxPretrained:
- `audio.onnx`: the model's audio input tensors → L2-normalised embedding. CLAP: the repeat-padded
  waveform → log-mel → HTSAT → projection (its STFT becomes a matmul with a DFT basis, as torch.onnx
  cannot export a complex STFT); combine: the feature extractor's output (wav2vec2 `input_values` +
  `attention_mask`, AST / Whisper `input_features`) → encoder → masked mean → projection;
- `text.onnx`: token ids + attention mask (+ token type ids) → L2-normalised embedding.
Pre-processing that does not export stays in Python (the tokenizer, the feature extractor, resampling
and cropping): `processor/` holds their files, and the runtime calls the students' own input functions.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.models import onnx_student as ox
from training.export_onnx import MIN_COSINE, PROBE_TEXTS, ExportReport, _cosines, _onnx_export, begin_export


class Tower(nn.Module):
    """One side of a student as a module of positional tensors (torch.onnx passes inputs by position)."""

    def __init__(self, student, side: str, names: Sequence[str]):
        super().__init__()
        self.student, self.side, self.names = student, side, tuple(names)

    def forward(self, *tensors):
        run = self.student.forward_audio if self.side == "audio" else self.student.forward_text
        return F.normalize(run(**dict(zip(self.names, tensors))).float(), dim=-1)


class ClapAudioTower(nn.Module):
    """waveform [B, L] → ClapStudent.log_mel's features → audio tower + projection → L2. The power STFT
    is a strided conv1d with a windowed DFT basis: the numbers of torch.stft, and it exports."""

    def __init__(self, student):
        super().__init__()
        self.student = student
        self.n_fft, self.hop = int(student.features.fft_window_size), int(student.features.hop_length)
        n = torch.arange(self.n_fft, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(n, torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)) / self.n_fft
        window = student.mel_window.double()[:, None]
        basis = torch.cat([window * torch.cos(angle), window * torch.sin(angle)], 1)   # [n_fft, 2 * bins]
        self.register_buffer("dft", basis.T.unsqueeze(1).float(), persistent=False)     # conv1d kernels

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2                        # torch.stft(center=True, pad_mode="reflect")
        padded = F.pad(waveform[:, None], (half, half), mode="reflect")
        real, imag = F.conv1d(padded, self.dft, stride=self.hop).chunk(2, dim=1)       # [B, bins, T] each
        mel = torch.matmul(self.student.mel_filters, real ** 2 + imag ** 2)            # [B, mels, T]
        return (10.0 * torch.log10(mel.clamp_min(1e-10))).transpose(1, 2).unsqueeze(1)

    def forward(self, waveform):
        features = self.log_mel(waveform)
        return F.normalize(self.student.model.get_audio_features(input_features=features).pooler_output, dim=-1)


def refusal(student) -> str | None:
    """Why this student cannot be exported, in one line; None when it can."""
    if student.KIND == "clap" and student.fused:
        return ("a fusion CLAP (enable_fusion) picks per clip between one resized mel and four crops from "
                "`is_longer`, a data-dependent branch torch.onnx cannot trace; export a non-fusion CLAP")
    if student.KIND not in ("clap", "combine"):
        return f"no ONNX export for the {student.KIND} kind"
    return None


def export_pretrained(student, out: str | Path, *, opset: int = 17, waves: Sequence[np.ndarray] | None = None,
                      texts: Sequence[str] = PROBE_TEXTS, min_cosine: float = MIN_COSINE) -> ExportReport:
    """Write audio.onnx, text.onnx and processor/ for a loaded ClapStudent / CombineStudent, embed
    `waves` and `texts` with both runtimes, and write onnx_config.json only when they agree."""
    why = refusal(student)
    if why:
        raise ValueError(f"{student.model_id} cannot be exported to ONNX: {why}")
    started = time.perf_counter()
    out, student, waves = begin_export(student, out, opset, waves)
    texts = list(texts)

    audio_names = _export_audio(student, waves, out / ox.PRETRAINED_AUDIO_NAME, opset)
    text_names = _export_text(student, texts, out / ox.TEXT_NAME, opset)
    _save_processor(student, out / ox.PROCESSOR_DIR)

    meta = {"kind": student.KIND, "model_id": student.model_id, "digest": student.digest(), "dim": student.dim,
            "audio_inputs": audio_names, "text_inputs": text_names, "logit_scale": float(student.logit_scale.detach()),
            "opset": opset, "torch": torch.__version__, **_input_settings(student)}
    runtime = ox.OnnxPretrained(out, meta=meta)              # the runtime the app would serve
    audio_cos = _cosines(student.embed_audio(waves, batch_size=5), runtime.embed_audio(waves, batch_size=7))
    text_cos = _cosines(student.embed_text(texts), runtime.embed_text(texts, batch_size=3))
    singles = texts[:4]                                       # a search query comes alone, unpadded
    text_cos = np.concatenate([text_cos, _cosines(student.embed_text(singles),
                                                  np.concatenate([runtime.embed_text([t]) for t in singles]))])
    report = ExportReport(student.model_id, str(out), opset, len(waves), len(texts), float(audio_cos.min()),
                          float(audio_cos.mean()), float(text_cos.min()), float(text_cos.mean()),
                          time.perf_counter() - started, min_cosine)
    if report.ok:                                             # else it is never served
        import onnxruntime
        meta |= {"onnxruntime": onnxruntime.__version__, "parity": asdict(report)}
        (out / ox.CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    return report


def _export_audio(student, waves: Sequence[np.ndarray], path: Path, opset: int) -> list[str]:
    """Traced on two real clips of different lengths; an input axis whose size follows the clip length
    (wav2vec2's samples) is dynamic, the fixed windows (CLAP, AST, Whisper) stay fixed."""
    by_length = sorted(waves[:4], key=len)
    sample = student.audio_inputs([by_length[0], by_length[-1]])
    shorter = student.audio_inputs([by_length[0][: max(len(by_length[0]) // 2, 4000)]] * 2)
    names = [k for k, v in sample.items() if v is not None]
    axes = {k: {0: "batch"} | {d: f"{k}_{d}" for d in range(1, sample[k].dim()) if sample[k].shape[d] != shorter[k].shape[d]}
            for k in names} | {"embedding": {0: "batch"}}
    module = ClapAudioTower(student) if student.KIND == "clap" else Tower(student, "audio", names)
    _export(module.eval(), tuple(sample[k] for k in names), path, names, axes, opset)
    return names


def _export_text(student, texts: Sequence[str], path: Path, opset: int) -> list[str]:
    sample = student.text_inputs(list(texts[:3]))
    names = list(sample)
    axes = {k: {0: "batch", 1: "tokens"} for k in names} | {"embedding": {0: "batch"}}
    _export(Tower(student, "text", names).eval(), tuple(sample[k] for k in names), path, names, axes, opset)
    return names


def _export(module, args, path, names, axes, opset) -> None:
    try:
        _onnx_export(module, args, path, names, axes, opset)
    except Exception as exc:          # an architecture torch.onnx does not cover: say which, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"torch.onnx could not export {path.stem} of this model: {first[:300]}") from None


def _save_processor(student, folder: Path) -> None:
    """The feature extractor and tokenizer files, so the export serves without the checkpoint's weights."""
    folder.mkdir(parents=True, exist_ok=True)
    student.features.save_pretrained(folder)
    tokenizer = student.tokenizer if student.KIND == "clap" else student.text_model[0].tokenizer
    tokenizer.save_pretrained(folder)


def _input_settings(student) -> dict:
    """What the runtime needs to build the same inputs as the student's own audio_inputs / text_inputs."""
    if student.KIND == "clap":
        return {"max_tokens": student.max_tokens}
    return {"max_seconds": float(student.meta["max_seconds"]), "whisper": student.whisper,
            "max_seq_length": int(student.text_model[0].max_seq_length or 512)}
