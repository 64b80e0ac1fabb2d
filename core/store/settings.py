"""All of Hearsay's settings in one place.

Precedence (lowest → highest): defaults here, an optional TOML file
(`hearsay.toml` in the working directory, or the path in `HEARSAY_CONFIG`),
then `HEARSAY_*` environment variables. Secrets (API keys) are read from the
environment only and are never written to the workspace.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]     # the repository: core/store/settings.py → ../../
ASSETS = ROOT / "assets"
SHIPPED_MODEL = ASSETS / "student"    # the student bundled with the app (search works on a fresh install)


def user_cache() -> Path:
    """Per-user cache shared by every workspace (extracted tagger, class-name prior): $HEARSAY_CACHE."""
    return Path(os.environ.get("HEARSAY_CACHE", Path.home() / ".cache" / "hearsay"))


@dataclass(frozen=True)
class Settings:
    workspace: Path = Path("workspace")
    device: str = "auto"                 # auto | cuda | mps | cpu
    teacher: str = "embedded"            # embedded | transformers | openai-compatible
    window_seconds: float = 10.0         # long recordings are cut into windows of this length
    overlap_seconds: float = 1.0         # ... overlapping by this much
    max_upload_mb: float = 200.0         # per imported file
    chroma_mode: str = "embedded"        # embedded (PersistentClient) | http (a `chroma run` server)
    chroma_host: str = "127.0.0.1"
    chroma_port: int = 8000
    seed_demo: bool = True               # import assets/demo into an empty workspace on launch
    # caption share of late fusion (core/pipeline/fusion.py): Search, the API, search --hybrid, evaluate --fusion.
    # 0.5 from leave-one-set-out and cross-validation (README "Late fusion"); clips without a caption rank as before;
    # each side's share is further scaled per query by its confidence (query-adaptive fusion)
    fusion_weight: float = 0.5
    # teacher backends
    transformers_model: str = "Qwen/Qwen2-Audio-7B-Instruct"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "qwen2-audio"
    teacher_prompt: str = ""             # empty: the backend's default prompt
    extra: dict = field(default_factory=dict)

    @property
    def openai_api_key(self) -> str | None:
        # Environment only: never stored in the catalogue or the TOML file.
        return os.environ.get("HEARSAY_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")

    def resolved_device(self) -> str:
        return resolve_device(self.device)


def resolve_device(name: str = "auto") -> str:
    if name != "auto":
        return name
    import torch    # lazy: settings load without torch
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _coerce(value: str, kind):
    if kind is bool or kind == "bool":
        return value.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, "int"):
        return int(value)
    if kind in (float, "float"):
        return float(value)
    if kind in (Path, "Path"):
        return Path(value)
    return value


def load_settings(config: str | Path | None = None, **overrides) -> Settings:
    """Defaults ← TOML ← environment ← explicit keyword overrides."""
    values: dict = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    path = Path(config or os.environ.get("HEARSAY_CONFIG", "hearsay.toml"))
    if path.is_file():
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        for key, value in data.items():
            key = key.replace("-", "_")
            if key in fields and key != "extra":
                values[key] = value
            else:
                values.setdefault("extra", {})[key] = value
    for name, f in fields.items():
        env = os.environ.get(f"HEARSAY_{name.upper()}")
        if env is not None and name != "extra":
            values[name] = _coerce(env, f.type)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "workspace" in values:
        values["workspace"] = Path(values["workspace"]).expanduser()
    return Settings(**values)
