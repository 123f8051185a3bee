"""Unsupervised-RLVR metrics and the Model Collapse Step (science.md §4)."""

from __future__ import annotations

import pytest
import torch

from trainer_hooks import (
    ConfigurationError,
    ModelCollapseTracker,
    make_layout,
    repetition_rate,
    reward_agreement,
)
from trainer_hooks._unsupervised import label_accuracy_from_labels, response_lengths


def test_reward_and_label_accuracy_majority_vote() -> None:
    # TTRL: answers per group; pseudo reward = answer == majority; oracle = answer == truth
    answers = [["4", "4", "5", "4"], ["7", "8", "8", "9"]]
    truth = ["4", "9"]
    pseudo, oracle = [], []
    for row, t in zip(answers, truth, strict=True):
        maj = max(set(row), key=row.count)
        pseudo.append([float(a == maj) for a in row])
        oracle.append([float(a == t) for a in row])
    p, o = torch.tensor(pseudo), torch.tensor(oracle)
    ra = reward_agreement(p, o, make_layout(p))
    # group 0: pseudo == oracle everywhere (4/4); group 1: pseudo [0,1,1,0], oracle [0,0,0,1] -> 1/4
    assert ra.per_query_reward_accuracy.tolist() == [1.0, 0.25]
    assert ra.reward_accuracy.item() == pytest.approx(5 / 8)
    assert ra.label_correct.tolist() == [1.0, 0.0]  # majority 4 == 4; majority 8 != 9
    assert ra.label_accuracy.item() == 0.5
    assert ra.proxy_reward.item() == pytest.approx(5 / 8)
    assert ra.gt_reward.item() == pytest.approx(4 / 8)
    assert label_accuracy_from_labels(["4", "8"], truth) == 0.5


def _rep_loop(seq: list[int], n: int) -> tuple[int, int]:
    seen: set[tuple[int, ...]] = set()
    rep = 0
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    for gr in grams:
        rep += gr in seen
        seen.add(gr)
    return rep, len(grams)


def test_repetition_rate_matches_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (6, 20), generator=gen)
    lengths = torch.tensor([20, 15, 4, 3, 0, 11])
    per_seq, pooled = repetition_rate(ids, lengths, n=3)
    reps, tots = 0, 0
    for i, row in enumerate(ids.tolist()):
        r, t = _rep_loop(row[: int(lengths[i])], 3)
        reps, tots = reps + r, tots + t
        assert per_seq[i].item() == pytest.approx(r / t if t else 0.0)
    assert pooled.item() == pytest.approx(reps / tots)


def test_repetition_all_same_and_bad_n() -> None:
    _, pooled = repetition_rate(torch.full((1, 10), 7), n=4)
    assert pooled.item() == pytest.approx(6 / 7)
    with pytest.raises(ConfigurationError, match="n must"):
        repetition_rate(torch.zeros(1, 5, dtype=torch.int64), n=0)


def test_response_lengths_from_mask() -> None:
    mask = torch.tensor([[[1, 1, 0], [1, 0, 0]]])
    assert response_lengths(make_layout(torch.zeros(1, 2)), mask=mask).tolist() == [2.0, 1.0]


def test_model_collapse_tracker() -> None:
    tr = ModelCollapseTracker()
    assert tr.threshold == 0.01
    assert not tr.update(0, 0.5)
    assert not tr.update(1, 0.01)  # not strictly below
    assert not tr.update(2, float("nan"))
    assert tr.update(3, 0.009)
    assert not tr.update(4, 0.0)
    assert tr.collapse_step == 3
    assert tr.collapse_value == 0.009
    with pytest.raises(ConfigurationError, match="threshold"):
        ModelCollapseTracker(1.5)
