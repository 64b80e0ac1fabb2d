"""core.pipeline.metrics on hand-made similarity matrices whose answers are worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from core.pipeline import metrics


def test_perfect_diagonal_scores_one_everywhere():
    sim = np.eye(4)
    rel = np.eye(4, dtype=bool)
    assert metrics.recall_at_k(sim, rel) == {1: 1.0, 5: 1.0, 10: 1.0}
    assert metrics.map_at_k(sim, rel) == 1.0


def test_recall_counts_the_rank_of_the_first_hit():
    # query 0: hit ranked 1st; query 1: hit ranked 3rd; query 2: hit ranked 6th (5 wrong items above it)
    sim = np.array([
        [0.9, 0.1, 0.2, 0.3, 0.0, 0.0],
        [0.8, 0.7, 0.6, 0.0, 0.0, 0.0],
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.1],
    ])
    rel = np.zeros_like(sim, dtype=bool)
    rel[0, 0] = rel[1, 2] = rel[2, 5] = True
    assert metrics.recall_at_k(sim, rel, ks=(1, 3, 5, 6)) == {1: 1 / 3, 3: 2 / 3, 5: 2 / 3, 6: 1.0}
    # AP = precision at the single hit: 1, 1/3, 1/6
    assert metrics.map_at_k(sim, rel) == pytest.approx((1 + 1 / 3 + 1 / 6) / 3)


def test_ties_are_broken_against_the_model():
    # a constant model: the relevant item ties with three wrong ones and ranks behind all of them
    sim = np.full((1, 4), 0.5)
    rel = np.array([[False, False, True, False]])
    assert metrics.recall_at_k(sim, rel, ks=(1, 3, 4)) == {1: 0.0, 3: 0.0, 4: 1.0}
    assert metrics.map_at_k(sim, rel) == pytest.approx(1 / 4)


def test_several_relevant_items_average_precision_at_each_hit():
    # "duplicates": two clips carry the query's caption, ranked 1st and 3rd
    sim = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]])
    rel = np.array([[True, False, True, False, False]])
    assert metrics.recall_at_k(sim, rel, ks=(1,)) == {1: 1.0}
    assert metrics.map_at_k(sim, rel) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_map_at_k_normalises_by_k_when_more_items_are_relevant():
    sim = np.linspace(1, 0, 15)[None, :]
    rel = np.ones((1, 15), dtype=bool)          # 15 relevant, only 10 can be shown
    assert metrics.map_at_k(sim, rel, k=10) == 1.0
    rel[0, :2] = False                          # the top two are wrong: hits at 3..10
    expected = sum((i - 2) / i for i in range(3, 11)) / 10
    assert metrics.map_at_k(sim, rel, k=10) == pytest.approx(expected)


def test_a_query_without_any_relevant_item_is_a_miss():
    sim = np.array([[0.9, 0.1], [0.2, 0.8]])
    rel = np.array([[True, False], [False, False]])
    assert metrics.recall_at_k(sim, rel, ks=(1,)) == {1: 0.5}
    assert metrics.map_at_k(sim, rel) == 0.5


def test_retrieval_report_reads_both_directions():
    audio = np.eye(3)
    text = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])     # text 1 describes clip 2 best, but belongs to clip 1
    rel = np.eye(3, dtype=bool)
    report = metrics.retrieval_report(audio, text, rel)
    assert report["t2a_r1"] == pytest.approx(1 / 3) and report["a2t_r1"] == pytest.approx(1 / 3)
    assert report["t2a_r5"] == 1.0 and report["a2t_r10"] == 1.0
    # texts 1 and 2: their clip scores 0, tied with one wrong clip that goes first → 3rd place
    assert report["map10"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_one_class_folder():
    audio = np.random.default_rng(0).normal(size=(5, 4))
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    classes = np.array([[1.0, 0, 0, 0]])
    labels = [0] * 5
    assert metrics.zero_shot_accuracy(audio, classes, labels) == 1.0
    pred = metrics.zero_shot_predictions(audio, classes, labels)
    cm = metrics.confusion_matrix(pred, labels, 1)
    assert cm.tolist() == [[5]]
    assert metrics.per_class_accuracy(cm).tolist() == [1.0]
    # one label prompt that every clip answers: every ranking starts with a hit
    rel = np.ones((1, 5), dtype=bool)
    report = metrics.retrieval_report(audio, classes, rel)
    assert report["t2a_r1"] == report["a2t_r1"] == report["map10"] == 1.0


def test_zero_shot_ties_count_against_the_model():
    audio = np.ones((4, 2)) / np.sqrt(2)           # every clip equally close to both classes
    classes = np.eye(2)
    labels = [0, 0, 1, 1]
    pred = metrics.zero_shot_predictions(audio, classes, labels)
    assert pred.tolist() == [1, 1, 0, 0]
    assert np.mean(pred == labels) == 0.0


def test_confusion_matrix_and_per_class_accuracy():
    labels = [0, 0, 1, 1, 1, 2]
    pred = [0, 1, 1, 1, 0, 2]
    cm = metrics.confusion_matrix(pred, labels, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    acc = metrics.per_class_accuracy(cm)
    assert acc[:3].tolist() == [0.5, pytest.approx(2 / 3), 1.0]
    assert np.isnan(acc[3])                         # a class with no clips has no accuracy


def test_empty_inputs_do_not_crash():
    assert metrics.recall_at_k(np.zeros((0, 3)), np.zeros((0, 3), bool)) == {1: 0.0, 5: 0.0, 10: 0.0}
    assert metrics.map_at_k(np.zeros((0, 3)), np.zeros((0, 3), bool)) == 0.0
    assert metrics.zero_shot_accuracy(np.zeros((0, 2)), np.eye(2), []) == 0.0
