"""Zero-shot classifiers: class labels × prompt templates → one text embedding per class.

The one place labels become prompts, for the Search tab's classify, the Evaluate tab and the
training validation alike, so their zero-shot numbers are comparable. As open_clip's
zero_shot_classifier: each label is filled into every template, the prompts are embedded, and a
class's vector is the normalised mean of its prompts' embeddings (CLIP's prompt ensembling).

One label rule (`spoken`): `dog_bark` / `Water-Flowing` / ` dog  bark ` → `dog bark`, `water flowing`:
separators become spaces and case is dropped, so prompts read like language.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from core.models.embedder import Embedder

DEFAULT_TEMPLATES: tuple[str, ...] = ("the sound of {label}",)


def clean_label(label: str) -> str:
    """`dog_bark` / `water-flowing` / ` dog  bark ` → `dog bark`, `water flowing` (case kept: for display)."""
    return re.sub(r"\s+", " ", re.sub(r"[_-]", " ", str(label))).strip()


def spoken(label: str) -> str:
    """The label as a prompt says it: clean_label, lower-cased."""
    return clean_label(label).lower()


def fill(template: str, label: str) -> str:
    """'{label}' (or '{}') marks where the label goes; a template with neither gets it appended."""
    if "{label}" in template:
        return template.replace("{label}", label)
    if "{}" in template:
        return template.replace("{}", label)
    return f"{template} {label}".strip()


def prompt(label: str, template: str = DEFAULT_TEMPLATES[0]) -> str:
    """One prompt for one label: `prompt("Dog_bark")` → "the sound of dog bark"."""
    return fill(template, spoken(label))


def prompts(labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[list[str]]:
    """[template][label] prompts, the order `classifier` embeds them in."""
    return [[prompt(label, t) for label in labels] for t in templates]


def classifier(model: Embedder, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
               ) -> np.ndarray:
    """[L, dim] float32, L2-normalised: per label, the mean of its prompts' text embeddings, re-normalised.

    One embed_text call per template (L texts each), averaged in float64."""
    per_template = [np.asarray(model.embed_text(row), dtype=np.float64) for row in prompts(labels, templates)]
    total = np.sum(per_template, axis=0)
    total /= np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    return total.astype(np.float32)
