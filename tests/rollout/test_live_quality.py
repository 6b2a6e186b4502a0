"""Live quality counts: the numbers a user reads match what sklearn-free
definitions give on the same labeled predictions, and survive the snapshot."""
import json
import random

import pytest

from rollout.live_quality import LiveQuality


def _exact_auc(pairs):
    pos = [p for p, y in pairs if y]
    neg = [p for p, y in pairs if not y]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def _stream(n, seed, skill=2.0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.random() < 0.3
        # A model with some skill: positives score higher on average.
        z = rng.gauss(skill if y else 0.0, 1.0)
        out.append((1 / (1 + pow(2.718281828, -(z - 1.0))), int(y)))
    return out


def test_accuracy_log_loss_calibration_and_auc_of_a_stream():
    import math
    pairs = _stream(2000, seed=1)
    q = LiveQuality()
    for p, y in pairs:
        q.add(p, y)
    assert q.labeled == 2000 and q.positives == sum(y for _, y in pairs)
    assert q.accuracy == pytest.approx(sum((p >= 0.5) == bool(y) for p, y in pairs) / 2000)
    assert q.log_loss == pytest.approx(
        -sum(math.log(p if y else 1 - p) for p, y in pairs) / 2000, rel=1e-9)
    assert q.calibration_gap == pytest.approx(
        sum(p for p, _ in pairs) / 2000 - q.positives / 2000)
    # Binned: within a hundredth of the exact Mann-Whitney AUC.
    assert abs(q.auc() - _exact_auc(pairs)) < 0.01
    assert 0.8 < q.auc() < 0.95


def test_no_labels_and_one_class_give_none_not_zero():
    q = LiveQuality()
    assert (q.accuracy, q.log_loss, q.auc(), q.calibration_gap) == (None, None, None, None)
    q.add(0.9, 1)
    assert q.accuracy == 1.0 and q.auc() is None


def test_merge_equals_one_accumulator_and_the_snapshot_round_trips():
    pairs = _stream(500, seed=2)
    whole, first, second = LiveQuality(), LiveQuality(), LiveQuality()
    for i, (p, y) in enumerate(pairs):
        whole.add(p, y)
        (first if i < 200 else second).add(p, y)
    merged = first.merge(second)
    assert (merged.labeled, merged.correct, merged.positives) == (
        whole.labeled, whole.correct, whole.positives)
    assert merged.auc() == pytest.approx(whole.auc())
    assert merged.log_loss == pytest.approx(whole.log_loss)
    assert merged.positive_scores.counts == whole.positive_scores.counts
    back = LiveQuality.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert back.to_dict() == whole.to_dict()


@pytest.mark.parametrize('damage, message', [
    (lambda d: d.pop('correct'), "missing field 'correct'"),
    (lambda d: d.update(correct=10**6), 'counts do not add up'),
    (lambda d: d['positive_scores'].update(bounds=[0.5, 1.0], counts=[0, 1, 0]),
     'other bucket bounds'),
])
def test_a_damaged_record_names_the_field(damage, message):
    q = LiveQuality()
    q.add(0.7, 1)
    q.add(0.2, 0)
    data = json.loads(json.dumps(q.to_dict()))
    damage(data)
    with pytest.raises(ValueError, match=message) as info:
        LiveQuality.from_dict(data, where='models.taxi.window.versions.2.quality')
    assert str(info.value).startswith('models.taxi.window.versions.2.quality')
