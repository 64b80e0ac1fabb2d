"""The student served by onnxruntime: the same embeddings as core.models.student.Student, cheaper on a CPU.

`python -m training export-onnx` writes, next to a checkpoint (`<checkpoint>/onnx/`):
- `audio_head.onnx`: everything trainable after the frozen front end (inputs: the tagger's patch
  logits, their mask, the pooled log-mel and its lengths, as `core.models.student.collate_features` builds
  them; output: the L2-normalised audio embedding);
- `text.onnx`: MiniLM + mean pooling + the student's projection (inputs: token ids, attention mask,
  token type ids; output: the L2-normalised text embedding);
- `tokenizer.json`: MiniLM's tokenizer, so text needs no PyTorch at all;
- `onnx_config.json`: written last, only when the export agreed with PyTorch (cosine ≥ 0.999):
  model id, weight digest (so the search index is shared with the PyTorch model), parity numbers.

The frozen front end (YAMNet log-mel + the quantised tagger, itself ONNX) is core.models.student's own.

The `clap` and `combine` kinds (training/export_onnx_pretrained.py) write `audio.onnx` (the model's own
audio input tensors → embedding), `text.onnx` (token ids + mask → embedding) and `processor/` (their
feature extractor and tokenizer, which stay in Python); `onnx_config.json` then names the `kind` and
OnnxPretrained serves them. `load_export` picks the class.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

EXPORT_DIR, CONFIG_NAME = "onnx", "onnx_config.json"
AUDIO_NAME, TEXT_NAME, TOKENIZER_NAME = "audio_head.onnx", "text.onnx", "tokenizer.json"
AUDIO_INPUTS = ("logits", "mask", "mel", "mel_lengths")     # + "emb" for students that use the tagger's embeddings
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRETRAINED_AUDIO_NAME, PROCESSOR_DIR = "audio.onnx", "processor"
EXPORT_FILES = {"embedded": (AUDIO_NAME, TEXT_NAME, TOKENIZER_NAME),
                "clap": (PRETRAINED_AUDIO_NAME, TEXT_NAME, PROCESSOR_DIR),
                "combine": (PRETRAINED_AUDIO_NAME, TEXT_NAME, PROCESSOR_DIR)}


def export_dir(checkpoint: str | Path) -> Path:
    return Path(checkpoint) / EXPORT_DIR


def find_export(checkpoint: str | Path, model_id: str | None = None) -> Path | None:
    """The checkpoint's verified export, if there is one for these very weights."""
    folder = export_dir(checkpoint)
    config = folder / CONFIG_NAME
    if not config.is_file():
        return None
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    if model_id is None:
        try:
            model_id = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_id")
        except (OSError, ValueError):
            return None
    files = EXPORT_FILES.get(meta.get("kind", "embedded"), ())
    if meta.get("model_id") != model_id or not files or not all((folder / n).exists() for n in files):
        return None      # stale: exported from other weights (or an unknown kind)
    return folder


def load_export(folder: str | Path, threads: int | None = None):
    """The runtime for a verified export folder: OnnxStudent (embedded) or OnnxPretrained (clap, combine)."""
    meta = json.loads((Path(folder) / CONFIG_NAME).read_text())
    cls = OnnxStudent if meta.get("kind", "embedded") == "embedded" else OnnxPretrained
    return cls(folder, threads=threads, meta=meta)


def session_options(threads: int | None = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")   # see core.models.yamnet: idle pools sleep
    threads = threads or int(os.environ.get("HEARSAY_ONNX_THREADS", 0) or 0)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


class OnnxStudent:
    """core.models.embedder.Embedder over an export folder (see the module docstring)."""

    def __init__(self, folder: str | Path, threads: int | None = None, meta: dict | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        self.folder = Path(folder)
        meta = meta if meta is not None else json.loads((self.folder / CONFIG_NAME).read_text())
        self.meta = meta
        self.model_id: str = meta["model_id"]
        self.dim: int = int(meta["dim"])
        self.patch_hop: int = int(meta["patch_hop"])
        self.quiet_gain: bool = bool(meta.get("quiet_gain", False))
        self.embeddings: bool = bool(meta.get("tagger_embeddings", False))
        self.words: bool = bool(meta.get("words", False))
        self.logit_scale: float = float(meta.get("logit_scale", np.log(1 / 0.07)))
        options = session_options(threads)
        providers = ["CPUExecutionProvider"]
        self._audio = ort.InferenceSession(str(self.folder / AUDIO_NAME), options, providers=providers)
        self._text = ort.InferenceSession(str(self.folder / TEXT_NAME), options, providers=providers)
        tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_NAME))
        tokenizer.enable_truncation(int(meta.get("max_seq_length", 256)))
        tokenizer.enable_padding(pad_id=int(meta.get("pad_id", 0)), pad_token=meta.get("pad_token", "[PAD]"))
        self._tokenizer = tokenizer
        self._lock = threading.Lock()      # tokenizers' padding/truncation state is per object

    def digest(self) -> str:
        """The PyTorch checkpoint's digest: the index built by either runtime serves both."""
        return self.meta["digest"]

    # -- audio -------------------------------------------------------------------------------------------
    def embed_audio(self, waves: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        from core.models.student import collate_features, extract_features
        out = []
        for i in range(0, len(waves), batch_size):
            batch = collate_features(extract_features(waves[i:i + batch_size], self.patch_hop,
                                                                quiet_gain=self.quiet_gain,
                                                                embeddings=self.embeddings, words=self.words))
            out.append(self.audio_head({k: v.numpy() for k, v in batch.items()}))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def audio_head(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Batch arrays shaped like `collate_features` → [B, dim] (the trainable part only)."""
        feed = {"logits": batch["logits"].astype(np.float32), "mask": batch["mask"].astype(bool),
                "mel": batch["mel"].astype(np.float32), "mel_lengths": batch["mel_lengths"].astype(np.int64)}
        if "emb" in batch:
            feed["emb"] = batch["emb"].astype(np.float32)
        if self.words:
            feed["words"] = batch["words"].astype(np.float32)
        return self._audio.run(None, feed)[0]

    # -- text --------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            enc = self._tokenizer.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}

    def embed_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            out.append(self._text.run(None, self.tokenize(texts[i:i + batch_size]))[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return f"OnnxStudent({self.model_id!r}, {self.folder})"


class OnnxPretrained:
    """core.models.embedder.Embedder over a clap / combine export (see the module docstring). Inputs are
    built by the students' own functions (clap_student / combine_student `audio_inputs`, `text_inputs`)
    from the saved feature extractor and tokenizer: only the networks run in onnxruntime."""

    def __init__(self, folder: str | Path, threads: int | None = None, meta: dict | None = None):
        import onnxruntime as ort
        from transformers import AutoFeatureExtractor, AutoTokenizer
        self.folder = Path(folder)
        self.meta = meta if meta is not None else json.loads((self.folder / CONFIG_NAME).read_text())
        self.kind: str = self.meta["kind"]
        self.model_id: str = self.meta["model_id"]
        self.dim: int = int(self.meta["dim"])
        self.logit_scale: float = float(self.meta.get("logit_scale", np.log(1 / 0.07)))
        options, providers = session_options(threads), ["CPUExecutionProvider"]
        self._audio = ort.InferenceSession(str(self.folder / PRETRAINED_AUDIO_NAME), options, providers=providers)
        self._text = ort.InferenceSession(str(self.folder / TEXT_NAME), options, providers=providers)
        processor = str(self.folder / PROCESSOR_DIR)
        self.features = AutoFeatureExtractor.from_pretrained(processor, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(processor, local_files_only=True)
        self._lock = threading.Lock()      # a fast tokenizer's padding/truncation state is per object

    def digest(self) -> str:
        """The PyTorch checkpoint's digest: the index built by either runtime serves both."""
        return self.meta["digest"]

    def audio_inputs(self, waves: Sequence[np.ndarray]) -> dict:
        if self.kind == "clap":
            from core.models.clap_student import audio_inputs
            inputs = audio_inputs(self.features, waves)
        else:
            from core.models.combine_student import audio_inputs
            inputs = audio_inputs(self.features, waves, float(self.meta["max_seconds"]), bool(self.meta["whisper"]))
        return {k: inputs[k].numpy() for k in self.meta["audio_inputs"]}

    def text_inputs(self, texts: Sequence[str]) -> dict:
        with self._lock:
            if self.kind == "clap":
                from core.models.clap_student import text_inputs
                out = text_inputs(self.tokenizer, texts, int(self.meta["max_tokens"]))
            else:     # sentence-transformers' own text call (Transformer.preprocess)
                out = self.tokenizer(list(texts), padding=True, truncation="longest_first",
                                     max_length=int(self.meta["max_seq_length"]), return_tensors="pt")
        return {k: np.asarray(out[k], np.int64) for k in self.meta["text_inputs"]}

    def embed_audio(self, waves: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        return self._embed(list(waves), batch_size, self._audio, self.audio_inputs)

    def embed_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self._embed(list(texts), batch_size, self._text, self.text_inputs)

    def _embed(self, items: list, batch_size: int, session, inputs) -> np.ndarray:
        out = [session.run(None, inputs(items[i:i + batch_size]))[0] for i in range(0, len(items), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return f"OnnxPretrained({self.kind}, {self.model_id!r}, {self.folder})"
