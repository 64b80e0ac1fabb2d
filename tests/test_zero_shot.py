"""core/models/zero_shot.py: one prompt rule and one classifier for the Search tab, the Evaluate tab and training.

A stand-in model gives every text its own fixed random direction and gives each clip the direction of
"the sound of <label as spoken>", so zero-shot is right exactly when a caller builds that prompt:
the three callers must reach 100 % on the same clips with the same texts.
"""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.models import zero_shot
from core.pipeline import search
from training import evaluate as ev
from training import train

LABELS = ["Dog_bark", "water-flowing", "Car  horn"]
SPOKEN = ["dog bark", "water flowing", "car horn"]                 # written out: the rule under test
PROMPTS = [f"the sound of {s}" for s in SPOKEN]
DIM = 32


def unit(text: str) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


class PromptEmbedder:
    """A wave (or clip id) whose first value is k sounds like LABELS[k]; texts are remembered."""
    model_id, dim = "prompt-embedder", DIM

    def __init__(self):
        self.seen: list[str] = []

    def embed_text(self, texts):
        self.seen += list(texts)
        return np.stack([unit(t) for t in texts])

    def embed_audio(self, waves):
        return np.stack([unit(PROMPTS[int(np.asarray(w).flat[0])]) for w in waves])


def test_labels_become_one_kind_of_prompt():
    assert [zero_shot.prompt(label) for label in LABELS] == PROMPTS
    assert zero_shot.clean_label("Car  horn") == "Car horn"                 # display keeps the case
    assert zero_shot.fill("a {} nearby", "dog") == "a dog nearby"
    assert zero_shot.fill("{label}!", "dog") == "dog!" and zero_shot.fill("loud", "dog") == "loud dog"
    assert zero_shot.prompts(["A_b"], ["x {label}", "{label} y"]) == [["x a b"], ["a b y"]]
    assert search.DEFAULT_TEMPLATES is ev.DEFAULT_TEMPLATES is zero_shot.DEFAULT_TEMPLATES
    assert train.label_prompt("Dog_bark") == "the sound of dog bark"


def test_classifier_is_the_normalised_mean_over_templates():
    model = PromptEmbedder()
    templates = ["the sound of {label}", "a recording of {label}"]
    got = zero_shot.classifier(model, LABELS, templates)
    assert got.dtype == np.float32 and got.shape == (3, DIM)
    for row, spoken in zip(got, SPOKEN):
        mean = unit(f"the sound of {spoken}").astype(np.float64) + unit(f"a recording of {spoken}")
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
    assert sorted(model.seen) == sorted(f"{t.split('{')[0]}{s}" for t in templates for s in SPOKEN)


def test_search_evaluate_and_training_build_the_same_classifier(tmp_path, monkeypatch):
    # the Search tab: classify one clip (its audio vector given; no index needed)
    tab = PromptEmbedder()
    monkeypatch.setattr(search, "embed_query_audio", lambda ws, emb, source: emb.embed_audio([source])[0])
    result = search.classify(None, tab, LABELS, source=np.full(16000, 1.0, np.float32))
    assert result.labels == LABELS and result.ranked()[0][0] == "water-flowing"
    assert tab.seen == PROMPTS

    # the Evaluate tab: the same labels as a labelled set
    items = [ev.EvalItem(f"clip{k}", LABELS[k % 3], None, lambda k=k: np.full(16000, k % 3, np.float32))
             for k in range(6)]
    tool = PromptEmbedder()
    result = ev.evaluate(tool, ev.EvalSet("three labels", items, "fp"))
    assert result.zero_shot_acc == 1.0
    assert set(PROMPTS) <= set(tool.seen) and not {t for t in tool.seen if t.startswith("the sound of")} - set(PROMPTS)

    # training's validation of the embedded student (training/train.py evaluate)
    class Student(PromptEmbedder):
        device, text_encoder, logit_scale = "cpu", None, torch.tensor(0.0)

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def forward_audio(self, logits, mask, mel, lengths, emb=None, words=None):
            return torch.from_numpy(self.embed_audio(logits.numpy()))

        def forward_text(self, base):
            return torch.from_numpy(np.stack([unit(f"caption {int(b[0])}") for b in base]))

    pairs = [SimpleNamespace(caption=f"caption {k}", label=LABELS[k % 3]) for k in range(6)]
    val = type("Val", (), {"pairs": pairs, "__len__": lambda self: 6, "__getitem__": lambda self, j: j})()
    monkeypatch.setattr(train.D, "collate", lambda ks: {
        "logits": torch.tensor([[k % 3] for k in ks]), "mask": torch.ones(len(ks), 1),
        "mel": torch.zeros(len(ks), 1), "mel_lengths": torch.ones(len(ks)),
        "text_base": torch.tensor([[float(k)] for k in ks]), "captions": [pairs[k].caption for k in ks]})
    student = Student()
    out = train.evaluate(student, val, lambda a, t, scale, base: torch.tensor(0.0))
    assert out["val_zero_shot"] == 1.0 and sorted(student.seen) == sorted(PROMPTS)

    # the CLAP / combined students' validation (training/train_clap.py)
    from training import train_clap
    paths = []
    for k in range(6):
        paths.append(tmp_path / f"clip{k}.npy")
        np.save(paths[-1], np.full(10, k % 3, np.float32))
    clap = Student()
    out = train_clap.validate(clap, pairs, paths)
    assert out["val_zero_shot"] == 1.0 and sorted(t for t in clap.seen if t.startswith("the sound")) == sorted(PROMPTS)


@pytest.mark.parametrize("label", ["Dog_bark", "DOG BARK", " dog-bark "])
def test_case_and_separators_do_not_change_the_class_vector(label):
    np.testing.assert_array_equal(zero_shot.classifier(PromptEmbedder(), [label]),
                                  zero_shot.classifier(PromptEmbedder(), ["dog bark"]))
