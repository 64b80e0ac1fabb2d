"""Training pairs from the catalogue, and the cached features the student trains on.

Which captions teach:
- accepted / edited reviews: the chosen caption, weight 1;
- clips nobody reviewed yet (pending, skipped): their newest teacher caption, weight
  `unreviewed_weight` (0 leaves them out); imported captions weigh `import_weight`;
- rejected clips: never.
Dataset labels (a recording's meta "label") travel with each pair only so validation can
report zero-shot accuracy; they never become training text.

Pairs split into train / validation by recording, so windows of one file never straddle the
split. The frozen front end's output (tagger logits per patch + pooled log-mel) is cached on
disk per clip content key, so epochs after the first cost only the small trainable layers.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from core.models.student import AudioFeatures, collate_features, extract_features, front_end_key
from core.store.files import atomic_write
from core.store.workspace import Workspace

REVIEWED = ("accepted", "edited")
UNREVIEWED = ("pending", "skipped")
Progress = Callable[[int, int, str], None]


@dataclass
class Pair:
    clip_id: int
    recording_id: int
    key: str               # clip content key (audio hash + window)
    caption: str
    weight: float
    status: str
    source: str
    label: str | None = None   # scoring only


def collect_pairs(ws: Workspace, *, unreviewed_weight: float = 0.5, import_weight: float = 1.0,
                  sources: Sequence[str] | None = None, min_confidence: float = 0.0,
                  teacher_replay: float = 0.0) -> list[Pair]:
    """Every training pair (see the module docstring). `teacher_replay` > 0 keeps, beside each reviewed
    clip's chosen caption, its newest teacher caption at that weight: reviewed captions are short and
    repetitive, the teacher's say what else is in the clip."""
    cat = ws.catalog
    captions = cat.current_captions()
    recordings = {r.id: r for r in cat.recordings()}
    pairs: list[Pair] = []
    for clip in cat.clips():
        cap = captions.get(clip.id)
        rec = recordings[clip.recording_id]
        if cap is None or not cap.text.strip() or (sources and rec.source not in sources):
            continue
        status = cat.get_review(clip.id).status
        if status in REVIEWED:
            weight = 1.0
        elif status in UNREVIEWED:
            if cap.origin == "import":
                weight = import_weight
            elif cap.origin == "teacher":
                if cap.confidence is not None and cap.confidence < min_confidence:
                    continue
                weight = unreviewed_weight
            else:                      # an annotator's caption without a decision: trust it as edited
                weight = 1.0
        else:                          # rejected
            continue
        if weight <= 0:
            continue
        key = f"{rec.sha256}:{clip.start:.3f}-{clip.end:.3f}"
        pairs.append(Pair(clip.id, rec.id, key, cap.text.strip(), float(weight), status, rec.source,
                          rec.meta.get("label")))
        if teacher_replay > 0 and status in REVIEWED and cap.origin != "teacher":
            old = [c for c in cat.captions(clip.id) if c.origin == "teacher" and c.text.strip()]
            if old:
                pairs.append(Pair(clip.id, rec.id, key, old[-1].text.strip(), float(teacher_replay), "replay",
                                  rec.source, rec.meta.get("label")))
    return pairs


def reviewed_share(pairs: Sequence[Pair]) -> float:
    """Share of the clips whose caption a person chose (replayed teacher captions not counted): the
    more of a workspace is reviewed, the fewer distinct captions it teaches and the more it can forget."""
    own = [p for p in pairs if p.status != "replay"]
    return sum(p.status in REVIEWED for p in own) / len(own) if own else 0.0


def split_by_recording(pairs: Sequence[Pair], val_fraction: float = 0.1, seed: int = 0,
                       sha_of: Callable[[Pair], str] | None = None) -> tuple[list[Pair], list[Pair]]:
    """Deterministic split on a hash of each recording: stable as the catalogue grows."""
    if val_fraction <= 0:
        return list(pairs), []
    sha_of = sha_of or (lambda p: p.key.split(":")[0])

    def bucket(p: Pair) -> float:
        h = hashlib.sha256(f"{seed}:{sha_of(p)}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    train = [p for p in pairs if bucket(p) >= val_fraction]
    val = [p for p in pairs if bucket(p) < val_fraction]
    recs = sorted({p.recording_id for p in pairs})
    if not val and len(recs) >= 2:        # tiny catalogues: still validate on one recording
        held = min(recs, key=lambda r: bucket(next(p for p in pairs if p.recording_id == r)))
        train = [p for p in pairs if p.recording_id != held]
        val = [p for p in pairs if p.recording_id == held]
    return train, val


class FeatureCache:
    """One .npz per clip under `root` (cache/features/<version>/ab/<hash>.npz); safe to delete."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        h = hashlib.sha1(key.encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npz"

    def load(self, key: str) -> AudioFeatures | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                return AudioFeatures(z["logits"], z["mel"], z["emb"] if "emb" in z else None,
                                     z["words"] if "words" in z else None)
        except Exception:  # noqa: BLE001 - a corrupt entry is recomputed, not fatal
            return None

    def save(self, key: str, feats: AudioFeatures) -> None:
        path = self.path(key)
        # logits stay float32 (they are the tagger's exact quantised values); the log-mel halves in size
        extra = {"emb": feats.emb.astype(np.float16)} if feats.emb is not None else {}
        if feats.words is not None:
            extra["words"] = feats.words.astype(np.float32)
        with atomic_write(path) as tmp:
            np.savez(tmp, logits=feats.logits.astype(np.float32), mel=feats.mel.astype(np.float16), **extra)


def cached_features(ws: Workspace, pairs: Sequence[Pair], patch_hop: int, *, quiet_gain: bool = False,
                    embeddings: bool = False, words: bool = False, batch: int = 32, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None) -> list[AudioFeatures]:
    """Features for every pair's clip, computing (and caching) only the missing ones."""
    cache = FeatureCache(ws.cache_dir / "features" / front_end_key(patch_hop, quiet_gain, embeddings, words))
    out: list[AudioFeatures | None] = [cache.load(p.key) for p in pairs]
    todo = [i for i, f in enumerate(out) if f is None]
    for n in range(0, len(todo), batch):
        if should_stop and should_stop():
            raise InterruptedError("stopped while computing features")
        idx = todo[n:n + batch]
        if progress:
            progress(n, len(todo), "computing audio features")
        waves = [ws.load_clip(pairs[i].clip_id) for i in idx]
        for i, f in zip(idx, extract_features(waves, patch_hop, quiet_gain=quiet_gain, embeddings=embeddings,
                                              words=words)):
            cache.save(pairs[i].key, f)
            out[i] = cache.load(pairs[i].key) or f            # exactly what a later run will load
    if progress and todo:
        progress(len(todo), len(todo), "audio features ready")
    return out  # type: ignore[return-value]


def text_embeddings(texts: Sequence[str]) -> np.ndarray:
    """Frozen MiniLM embeddings, each distinct caption encoded once."""
    from core.models.text_encoder import encode
    unique = sorted(set(texts))
    emb = encode(unique) if unique else np.zeros((0, 384), np.float32)
    where = {t: i for i, t in enumerate(unique)}
    return emb[[where[t] for t in texts]] if texts else emb


@dataclass
class Augment:
    crop_min: float = 0.6        # keep at least this share of a clip's patches
    mel_mask: float = 0.1        # zero out up to this share of time and of bands (branch input only)
    gain_db: float = 6.0         # random gain on the branch's log-mel

    def __call__(self, f: AudioFeatures, rng: random.Random) -> AudioFeatures:
        logits, mel, emb = f.logits, f.mel.astype(np.float32), f.emb     # the words are the whole clip's: kept
        n = len(logits)
        if n > 1 and self.crop_min < 1:
            keep = max(1, int(round(n * rng.uniform(self.crop_min, 1.0))))
            start = rng.randint(0, n - keep)
            per_patch = max(1, len(mel) // n)
            logits = logits[start:start + keep]
            emb = emb[start:start + keep] if emb is not None else None
            mel = mel[start * per_patch:(start + keep) * per_patch] if len(mel) >= n else mel
        mel = mel + np.float32(np.log(10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)))
        if self.mel_mask > 0 and len(mel) > 4:
            t = rng.randint(0, int(len(mel) * self.mel_mask))
            t0 = rng.randint(0, len(mel) - t)
            b = rng.randint(0, int(mel.shape[1] * self.mel_mask))
            b0 = rng.randint(0, mel.shape[1] - b)
            mel = mel.copy()
            floor = mel.min()
            mel[t0:t0 + t] = floor
            mel[:, b0:b0 + b] = floor
        return AudioFeatures(logits, mel, emb, f.words)


class PairDataset(torch.utils.data.Dataset):
    """In-memory features + captions; random crops and light augmentation when `augment` is set."""

    def __init__(self, pairs: Sequence[Pair], feats: Sequence[AudioFeatures], text_base: np.ndarray,
                 augment: Augment | None = None, seed: int = 0):
        self.pairs, self.text_base = list(pairs), np.asarray(text_base, np.float32)
        self.feats = [AudioFeatures(np.asarray(f.logits, np.float32), np.asarray(f.mel, np.float32),
                                    None if f.emb is None else np.asarray(f.emb, np.float32),
                                    None if f.words is None else np.asarray(f.words, np.float32)) for f in feats]
        self.augment = augment
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        f = self.feats[i]
        if self.augment is not None:
            f = self.augment(f, self.rng)
        return {"features": f, "text_base": self.text_base[i], "caption": self.pairs[i].caption,
                "weight": self.pairs[i].weight, "index": i}


def collate(items: Sequence[dict]) -> dict:
    batch = collate_features([it["features"] for it in items])
    batch["text_base"] = torch.from_numpy(np.stack([it["text_base"] for it in items]))
    batch["weight"] = torch.tensor([it["weight"] for it in items], dtype=torch.float32)
    batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
    batch["captions"] = [it["caption"] for it in items]
    return batch


def pair_summary(ws: Workspace, **kwargs) -> dict:
    """What a run with these data settings would train on (the Train tab shows it before Launch)."""
    pairs = collect_pairs(ws, **kwargs)
    by_status: dict[str, int] = {}
    by_source: dict[str, int] = {}
    for p in pairs:
        by_status[p.status] = by_status.get(p.status, 0) + 1
        by_source[p.source] = by_source.get(p.source, 0) + 1
    return {"pairs": len(pairs), "recordings": len({p.recording_id for p in pairs}),
            "weight": round(sum(p.weight for p in pairs), 2), "by_status": by_status, "by_source": by_source}
