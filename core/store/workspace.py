"""The workspace folder: the catalogue plus the files it points to.

    catalog.db   SQLite (WAL)           audio/ab/<sha256>.flac   16 kHz mono, content-addressed
    chroma/      embedded Chroma store  models/, runs/           checkpoints and training logs
    cache/       derived, safe to delete (spectrograms, features)
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from core.store import audio
from core.store.catalog import RESTORE_HINT, Catalog, CatalogLost, Clip, Recording
from core.store.files import atomic_write, is_temp
from core.store.settings import Settings, load_settings

FOLDERS = ("audio", "models", "runs", "cache", "chroma")


def _folder(name: str) -> property:
    """A Workspace attribute for one of its FOLDERS."""
    return property(lambda self: self.root / name, doc=f"the workspace's {name}/ folder")


class Workspace:
    def __init__(self, root: str | Path | None = None, settings: Settings | None = None):
        self.settings = settings or load_settings()
        self.root = Path(root if root is not None else self.settings.workspace).expanduser().resolve()
        self._refuse_lost_catalogue()
        for sub in FOLDERS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _refuse_lost_catalogue(self) -> None:
        """Audio without its catalogue is a lost workspace, not a new one: a fresh empty schema here
        would make the library look like orphans (and invite the demo to be seeded into it)."""
        db = self.root / "catalog.db"
        if db.exists() and db.stat().st_size > 0:
            return
        stored = sum(1 for p in self.audio_dir.rglob("*.flac") if not is_temp(p))
        if stored:
            state = "is empty" if db.exists() else "is missing"
            raise CatalogLost(f"{db} {state} but {self.audio_dir} holds {stored} audio file(s): "
                              f"the catalogue was lost; {RESTORE_HINT}")

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.root / "catalog.db")

    audio_dir = _folder("audio")
    chroma_dir = _folder("chroma")
    models_dir = _folder("models")
    runs_dir = _folder("runs")
    cache_dir = _folder("cache")

    def audio_path(self, sha256: str) -> Path:
        return self.audio_dir / sha256[:2] / f"{sha256}.flac"

    def recording_path(self, recording: Recording | int) -> Path:
        if isinstance(recording, int):
            recording = self.catalog.get_recording(recording)
        return self.audio_path(recording.sha256)

    def load_clip(self, clip: Clip | int) -> np.ndarray:
        """The clip's samples: 16 kHz mono float32."""
        if isinstance(clip, int):
            clip = self.catalog.get_clip(clip)
        return audio.read(self.recording_path(clip.recording_id), clip.start, clip.end)

    def clip_key(self, clip: Clip) -> str:
        """A content key for a clip: same audio and window → same key, whatever its id."""
        rec = self.catalog.get_recording(clip.recording_id)
        return f"{rec.sha256}:{clip.start:.3f}-{clip.end:.3f}"

    def clip_wav_path(self, clip: Clip | int) -> Path:
        """A WAV of just this window, for players; cached under cache/clips."""
        clip, path = self._clip_cache(clip, "clips", ".wav")
        if not path.exists():
            import soundfile as sf
            with atomic_write(path) as tmp:
                sf.write(tmp, audio.pcm16(self.load_clip(clip)), audio.SAMPLE_RATE, subtype="PCM_16")
        return path

    def spectrogram_path(self, clip: Clip | int) -> Path:
        clip, path = self._clip_cache(clip, "spectrograms", ".png")
        if not path.exists():
            audio.spectrogram_png(self.load_clip(clip), path)
        return path

    def _clip_cache(self, clip: Clip | int, folder: str, suffix: str) -> tuple[Clip, Path]:
        """The clip (looked up by id if need be) and its derived file under cache/<folder>, named by content."""
        if isinstance(clip, int):
            clip = self.catalog.get_clip(clip)
        return clip, self.cache_dir / folder / f"{self.clip_key(clip).replace(':', '_')}{suffix}"

    def run_dir(self, run_id: int) -> Path:
        """A training run's folder: runs/run-NNNN."""
        return self.runs_dir / f"{RUN_PREFIX}{run_id:04d}"


RUN_PREFIX = "run-"


def parse_run_id(folder: str | Path) -> int:
    """The run id a run folder (Workspace.run_dir) is named after."""
    return int(Path(folder).name.rsplit("-", 1)[-1])
