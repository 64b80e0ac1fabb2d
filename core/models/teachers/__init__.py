"""Teacher backends, chosen by name: `get_teacher("embedded" | "transformers" | "openai-compatible", settings)`.

    from core.models.teachers import get_teacher
    outs = get_teacher("embedded").caption([wave16k, ...])   # -> list[TeacherOutput]
"""
from __future__ import annotations

import importlib
import threading

from core.store.settings import Settings, load_settings
from core.models.teachers.base import Teacher, TeacherOutput

# name -> (module, class); modules are imported only when chosen (the LLM ones pull in torch).
BACKENDS: dict[str, tuple[str, str]] = {
    "embedded": ("core.models.teachers.embedded", "EmbeddedTeacher"),
    "transformers": ("core.models.teachers.transformers_llm", "TransformersTeacher"),
    "openai-compatible": ("core.models.teachers.openai_compat", "OpenAICompatTeacher"),
}
ALIASES = {"openai": "openai-compatible", "openai_compat": "openai-compatible", "http": "openai-compatible",
           "qwen": "transformers", "llm": "transformers"}

_cache: dict[tuple, Teacher] = {}
_lock = threading.Lock()


def teacher_names() -> list[str]:
    return list(BACKENDS)


def get_teacher(name: str | None = None, settings: Settings | None = None, *, prompt: str | None = None,
                fresh: bool = False, **kwargs) -> Teacher:
    """A teacher by name (default: settings.teacher). Instances are shared per (name, prompt, settings)
    because loading a model is slow; pass fresh=True for a private one."""
    settings = settings or load_settings()
    name = ALIASES.get((name or settings.teacher).lower(), (name or settings.teacher).lower())
    if name not in BACKENDS:
        raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(BACKENDS)}")
    prompt = prompt if prompt is not None else (settings.teacher_prompt or None)
    module_name, class_name = BACKENDS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    if fresh or kwargs:
        return cls(settings, prompt=prompt, **kwargs)
    key = (name, prompt, _settings_key(settings, name))
    with _lock:
        if key not in _cache:
            _cache[key] = cls(settings, prompt=prompt)
        return _cache[key]


def default_prompt(name: str | None, settings: Settings | None = None) -> str:
    """The prompt a backend uses when none is given ("" for the embedded teacher, which has no prompt:
    its captions record the composer version instead). Loads no model."""
    settings = settings or load_settings()
    name = ALIASES.get((name or settings.teacher).lower(), (name or settings.teacher).lower())
    if name == "embedded":
        return ""
    module_name, _ = BACKENDS[name]
    return getattr(importlib.import_module(module_name), "DEFAULT_PROMPT", "")


def _settings_key(settings: Settings, name: str) -> tuple:
    if name == "transformers":
        return (settings.transformers_model, settings.device, repr(sorted(settings.extra.items())))
    if name == "openai-compatible":
        return (settings.openai_base_url, settings.openai_model, repr(sorted(settings.extra.items())))
    return ()


__all__ = ["Teacher", "TeacherOutput", "get_teacher", "teacher_names", "default_prompt", "BACKENDS"]
