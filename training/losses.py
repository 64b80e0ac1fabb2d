"""Contrastive losses for audio-text pairs, after open_clip's `loss.py`.

`ContrastiveLoss(beta=0)` is the symmetric InfoNCE of CLIP; with `beta > 0` its targets become
`(1-β)·I + β·S`, where S is the caption-caption similarity (from frozen text embeddings, negatives
clipped, each row summing to 1): two clips whose captions say nearly the same thing are no longer
pushed apart as if they were unrelated.

With torch.distributed initialised, every process gathers the other processes' embeddings *with
gradients* (`torch.distributed.nn.all_gather`), so the negatives are the global batch.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def gather_features(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """All processes' rows of each tensor (concatenated in rank order) and this process's rank.

    Gradients flow back to every process's own rows, as in open_clip's `gather_with_grad`.
    """
    if not is_distributed():
        return list(tensors), 0
    import torch.distributed.nn as dist_nn
    gathered = [torch.cat(dist_nn.all_gather(t.contiguous()), dim=0) for t in tensors]
    return gathered, torch.distributed.get_rank()


def soft_targets(text_base: torch.Tensor, text_base_all: torch.Tensor, beta: float,
                 offset: int = 0) -> torch.Tensor:
    """[B, N] targets: (1-β) at each pair's own column + β·(row-normalised caption similarity)."""
    n_local, n_all = text_base.shape[0], text_base_all.shape[0]
    eye = torch.zeros(n_local, n_all, device=text_base.device)
    eye[torch.arange(n_local), torch.arange(n_local) + offset] = 1.0
    if beta <= 0:
        return eye
    sim = F.normalize(text_base.float(), dim=-1) @ F.normalize(text_base_all.float(), dim=-1).T
    sim = sim.clamp_min(0.0)
    sim = sim / sim.sum(dim=1, keepdim=True).clamp_min(1e-8)
    return (1.0 - beta) * eye + beta * sim


class ContrastiveLoss(nn.Module):
    """Symmetric (audio→text and text→audio) cross-entropy over a batch of paired embeddings.

    forward(audio, text, logit_scale, text_base=None, weights=None):
      audio, text: [B, D] L2-normalised; logit_scale: log of the inverse temperature;
      text_base: frozen caption embeddings for the soft targets (needed when beta > 0);
      weights: [B] per-pair weights (reviewed captions 1, unreviewed ones less).
    """

    def __init__(self, beta: float = 0.0, max_scale: float = 100.0, distill: float = 0.0):
        super().__init__()
        self.beta = float(beta)
        self.max_scale = max_scale
        self.distill = float(distill)

    def forward(self, audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                text_base: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        scale = logit_scale.exp().clamp(max=self.max_scale)
        local = [audio, text] + ([text_base] if text_base is not None else [])
        gathered, rank = gather_features(*local)
        audio_all, text_all = gathered[0], gathered[1]
        offset = rank * audio.shape[0]
        logits_a2t = scale * audio.float() @ text_all.float().T          # [B, N]
        logits_t2a = scale * text.float() @ audio_all.float().T          # [B, N]
        if self.beta > 0:
            if text_base is None:
                raise ValueError("the soft-label loss needs text_base (frozen caption embeddings)")
            targets = soft_targets(text_base, gathered[2], self.beta, offset)
        else:
            targets = soft_targets(audio, audio_all, 0.0, offset)
        per_pair = 0.5 * (_soft_ce(logits_a2t, targets) + _soft_ce(logits_t2a, targets))
        if self.distill > 0:    # also pull each clip onto its own caption's point (the caption side stays put)
            per_pair = per_pair + self.distill * (1.0 - (audio.float() * text.detach().float()).sum(-1))
        if weights is None:
            return per_pair.mean()
        w = weights.to(per_pair.dtype)
        return (per_pair * w).sum() / w.sum().clamp_min(1e-8)


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row against a target distribution."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def make_loss(name: str = "soft", beta: float = 0.3, distill: float = 0.0) -> ContrastiveLoss:
    """`infonce` (hard targets) or `soft` (β-smoothed by caption similarity); `distill` adds a cosine term."""
    if name == "infonce":
        return ContrastiveLoss(beta=0.0, distill=distill)
    if name == "soft":
        return ContrastiveLoss(beta=beta, distill=distill)
    raise ValueError(f"unknown loss {name!r}; choose infonce or soft")
