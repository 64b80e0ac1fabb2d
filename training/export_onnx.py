"""Export a student to ONNX and prove it agrees with PyTorch: the files core/models/onnx_student.py reads,
then real clips and captions embedded with both runtimes (`python -m core export-onnx`, core/cli/export_onnx.py).
The clap and combine students: training/export_onnx_pretrained.py (same report, same rule).
"""
from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.models import onnx_student as ox
from core.store.settings import ASSETS

MIN_COSINE = 0.999
PROBE_TEXTS = ("a dog barking", "rain falling on a tin roof with distant thunder", "a man speaking",
               "glass breaking", "a violin playing a slow melody", "x",
               "an electric drill whining while someone hammers nails into wood in a busy workshop")


@dataclass
class ExportReport:
    model_id: str
    out: str
    opset: int
    clips: int
    texts: int
    audio_min_cosine: float
    audio_mean_cosine: float
    text_min_cosine: float
    text_mean_cosine: float
    seconds: float
    min_cosine: float = MIN_COSINE        # the bar it had to clear

    @property
    def ok(self) -> bool:
        return min(self.audio_min_cosine, self.text_min_cosine) >= self.min_cosine

    def summary(self) -> str:
        return (f"{self.model_id} → {self.out} (opset {self.opset}); cosine vs PyTorch on {self.clips} real clips: "
                f"min {self.audio_min_cosine:.6f}, mean {self.audio_mean_cosine:.6f}; on {self.texts} texts: "
                f"min {self.text_min_cosine:.6f}, mean {self.text_mean_cosine:.6f} "
                f"({'OK' if self.ok else f'below {MIN_COSINE}'}; {self.seconds:.1f} s)")


# -- the exported modules ------------------------------------------------------------------------------
class AudioHead(nn.Module):
    """The student's trainable audio path, after the frozen front end."""

    def __init__(self, student, inputs: Sequence[str]):
        super().__init__()
        self.student, self.inputs = student, tuple(inputs)

    def forward(self, *tensors):
        # the graph's inputs by name: which optional ones it has depends on the student's config
        return self.student.forward_audio(**dict(zip(self.inputs, tensors)))


class TextTower(nn.Module):
    """MiniLM → mean pooling → L2 → the student's projection → L2 (sentence-transformers' own steps)."""

    def __init__(self, student):
        super().__init__()
        encoder = student.text_encoder
        if encoder is None:
            from core.models.text_encoder import get_text_encoder
            encoder = get_text_encoder("cpu")
        self.bert = encoder[0].auto_model
        self.max_seq_length = int(encoder[0].max_seq_length or 256)
        self.student = student

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return self.student.forward_text(F.normalize(pooled, dim=-1))


# -- export and verify ----------------------------------------------------------------------------------
def begin_export(student, out: str | Path, opset: int, waves: Sequence[np.ndarray] | None):
    """What every kind's export starts with: a supported opset, the output folder with its verified mark
    removed (invalid until verified again), the model on CPU in eval mode, and the clips to verify on."""
    if opset < 17:
        raise ValueError("opset must be 17 or later")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ox.CONFIG_NAME).unlink(missing_ok=True)
    return out, student.to("cpu").eval(), list(waves if waves is not None else demo_waves())


def export(student, out: str | Path, *, opset: int = 17, waves: Sequence[np.ndarray] | None = None,
           texts: Sequence[str] = PROBE_TEXTS, min_cosine: float = MIN_COSINE) -> ExportReport:
    """Write the ONNX files for a loaded `core.models.student.Student`, verify them, and mark them valid."""
    from core.models.student import collate_features
    from core.models.text_encoder import minilm_path
    started = time.perf_counter()
    out, student, waves = begin_export(student, out, opset, waves)

    # audio head: traced on two real clips of different lengths, every axis dynamic
    sample = collate_features(student.features(waves[:2]))
    audio_axes = {"logits": {0: "batch", 1: "patches"}, "mask": {0: "batch", 1: "patches"},
                  "mel": {0: "batch", 1: "frames"}, "mel_lengths": {0: "batch"}, "embedding": {0: "batch"},
                  "emb": {0: "batch", 1: "patches"}, "words": {0: "batch"}}
    inputs = (ox.AUDIO_INPUTS + (("emb",) if student.config.tagger_embeddings else ())
              + (("words",) if student.config.words else ()))
    _onnx_export(AudioHead(student, inputs), tuple(sample[k] for k in inputs), out / ox.AUDIO_NAME,
                 inputs, {k: v for k, v in audio_axes.items() if k in inputs + ("embedding",)}, opset)

    tower = TextTower(student).eval()
    tokens = tokenizer_for(minilm_path(), tower.max_seq_length).encode_batch(list(texts[:3]))
    sample_text = tuple(torch.tensor([getattr(e, a) for e in tokens]) for a in ("ids", "attention_mask", "type_ids"))
    text_axes = {n: {0: "batch", 1: "tokens"} for n in ox.TEXT_INPUTS} | {"embedding": {0: "batch"}}
    _onnx_export(tower, sample_text, out / ox.TEXT_NAME, ox.TEXT_INPUTS, text_axes, opset)
    (out / ox.TOKENIZER_NAME).write_bytes((Path(minilm_path()) / ox.TOKENIZER_NAME).read_bytes())

    meta = {"model_id": student.model_id, "digest": student.digest(), "dim": student.dim,
            "patch_hop": student.config.patch_hop, "quiet_gain": student.config.quiet_gain,
            "tagger_embeddings": student.config.tagger_embeddings, "words": student.config.words,
            "logit_scale": float(student.logit_scale.detach()),
            "max_seq_length": tower.max_seq_length, "pad_id": 0, "pad_token": "[PAD]", "opset": opset,
            "torch": torch.__version__}
    # verify with the runtime the app will use, on real clips (in uneven batches) and varied texts
    runtime = ox.OnnxStudent(out, meta=meta)
    audio_cos = _cosines(student.embed_audio(waves, batch_size=5), runtime.embed_audio(waves, batch_size=7))
    text_cos = _cosines(student.embed_text(list(texts)), runtime.embed_text(list(texts), batch_size=3))
    singles = list(texts[:4])                                 # a search query comes alone, unpadded
    text_cos = np.concatenate([text_cos, _cosines(student.embed_text(singles),
                                                  np.concatenate([runtime.embed_text([t]) for t in singles]))])
    report = ExportReport(student.model_id, str(out), opset, len(waves), len(texts),
                          float(audio_cos.min()), float(audio_cos.mean()), float(text_cos.min()),
                          float(text_cos.mean()), time.perf_counter() - started, min_cosine)
    if report.ok:                                             # else it is never served
        import onnxruntime
        meta |= {"onnxruntime": onnxruntime.__version__, "parity": asdict(report)}
        (out / ox.CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    return report


def _onnx_export(module: nn.Module, args: tuple, path: Path, names: Sequence[str], axes: dict, opset: int) -> None:
    # The TorchScript exporter: the dynamo one needs onnxscript, which this stack does not carry.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=list(names),
                          output_names=["embedding"], dynamic_axes=axes, do_constant_folding=True)


def tokenizer_for(model_dir: str | Path, max_length: int):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / ox.TOKENIZER_NAME))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def demo_waves(folder: str | Path | None = None, limit: int = 24) -> list[np.ndarray]:
    """Real clips to verify on: a labelled folder (audio/ + meta.csv, or just audio files), by default
    the bundled demo set, spread over its sources."""
    from core.store.audio import decode
    folder = Path(folder) if folder else ASSETS / "demo"
    audio = folder / "audio" if (folder / "audio").is_dir() else folder
    files = sorted(p for p in audio.iterdir() if p.suffix.lower() in (".flac", ".wav", ".mp3", ".ogg"))
    if not files:
        raise FileNotFoundError(f"no audio files in {audio}")
    step = max(1, len(files) // limit)
    return [decode(str(p))[0] for p in files[::step][:limit]]


def demo_texts(folder: str | Path | None = None) -> list[str]:
    """The probe sentences plus the folder's labels / captions."""
    folder = Path(folder) if folder else ASSETS / "demo"
    texts = list(PROBE_TEXTS)
    meta = folder / "meta.csv"
    if meta.is_file():
        with meta.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                text = row.get("caption") or row.get("label")
                if text and text not in texts:
                    texts.append(text)
    return texts
