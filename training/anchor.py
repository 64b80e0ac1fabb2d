"""Keep what the student knew while it learns a workspace's captions (issue 15, "no forgetting").

Reviewed captions are short and few ("the sound of kettle" × 50): trained on them alone the
residual layers map every sound, also ones far from the workspace, onto those few points, and
zero-shot search for anything else collapses (benchmarks/review_gain.py measures it). Two pulls
back toward the model training started from (the untrained class-name prior for a fresh
student, the previous model otherwise):

- `anchor` (function space): each training clip's audio embedding stays near the one the
  starting model gave it, a cosine distillation term weighted like the pair;
- `weight_anchor` (weight space, L2-SP): the squared distance of the trainable weights (not
  MiniLM's) from their starting values, summed.

and one after training, `blended` (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models"): the saved model is start + wise·(trained − start), which keeps most of what training
gained on the workspace's own sounds and most of what the starting model knew about everything else
(benchmarks/student_bench.py leave-one-set-out; README "Review without forgetting").
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from core.models.student import Student


class Anchor:
    """Frozen copy of the starting model and its weights; `loss()` is added to the training loss."""

    def __init__(self, model: Student, anchor: float = 0.0, weight_anchor: float = 0.0):
        self.anchor, self.weight_anchor = float(anchor), float(weight_anchor)
        self.teacher = None
        if self.anchor > 0:
            self.teacher = copy.deepcopy(model).eval()
            self.teacher.text_encoder = None              # only its audio side is asked
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()
                      if p.requires_grad and not n.startswith("text_encoder.")} if self.weight_anchor > 0 else {}

    @property
    def active(self) -> bool:
        return self.anchor > 0 or self.weight_anchor > 0

    def to(self, device) -> "Anchor":
        if self.teacher is not None:
            self.teacher.to(device)
        self.start = {n: t.to(device) for n, t in self.start.items()}
        return self

    def loss(self, model: Student, batch: dict, audio: torch.Tensor) -> torch.Tensor:
        total = audio.new_zeros(())
        if self.teacher is not None:
            with torch.no_grad():
                before = self.teacher.forward_audio(batch["logits"], batch["mask"], batch["mel"],
                                                    batch["mel_lengths"], batch.get("emb"), batch.get("words"))
            w = batch["weight"].to(audio.dtype)
            drift = 1.0 - (audio.float() * before.float()).sum(-1)
            total = total + self.anchor * (drift * w).sum() / w.sum().clamp_min(1e-8)
        if self.start:
            named = dict(model.named_parameters())
            total = total + self.weight_anchor * sum(((named[n].float() - p0.float()) ** 2).sum()
                                                     for n, p0 in self.start.items())
        return total


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights training will change (what `blended` interpolates from)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@contextmanager
def blended(model: torch.nn.Module, start: dict[str, torch.Tensor], wise: float):
    """Temporarily set each weight in `start` to start + wise·(current − start), then put it back."""
    params = dict(model.named_parameters())
    current = {n: params[n].detach().clone() for n in start}
    with torch.no_grad():
        for n, w0 in start.items():
            params[n].copy_(torch.lerp(w0.to(current[n]), current[n], wise))
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, w in current.items():
                params[n].copy_(w)
