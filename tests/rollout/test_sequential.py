"""rollout/sequential.py's statistics by simulation across seeds (pure Python, ~5 s).

Measured (base accuracy 85%, equal arms, a look every 100 labels per arm up
to 5,000, 300 seeds, default policy: margin 0.02, alpha 0.05):

* equal canary, always-valid test: false 'worse' (false rollback) 0/300 = 0.0;
  the interval missed the true difference at some look in 1% of seeds
  (guarantee: <= alpha = 5%);
* the same looks with a fixed-horizon z-test and margin 0: 16.7% of equal
  canaries flagged 'worse' at some look (one-sided nominal 2.5%); the
  always-valid test with margin 0 on the same streams: 0.7%;
* a 5-point drop: rolled back within 4,200 labels per arm in 80% of seeds
  (89% by 5,000);
* a 2-point drop at the default margin (0.02) sits on the margin: over 30,000
  labels per arm it was never rolled back and never passed (held: the rollout
  does not proceed); with accuracy_margin 0 it is rolled back within 10,000
  labels per arm in 80% of seeds (median 6,000); a 4-point drop at the
  default margin (2 points beyond it) within 11,000 (median 6,000).
* SRM 10% -> 14% at 2,000 requests: detected in every seed; a correct split:
  false alarms at ~0.001 (10,000 seeds).
* AUC difference interval (Hanley-McNeil): ~95% coverage.
"""
import math
import random

import pytest

from rollout import sequential as sq

BASE = 0.85
STEP, LOOKS = 100, 50          # a look every 100 labels per arm, up to 5,000
SEEDS = 300
ALPHA = 0.05


def _looks(seed, p_canary, p_stable, margin, test='sequential', step=STEP, looks=LOOKS):
    """First look (labels per arm) of each decision, and whether the interval
    ever missed the true difference."""
    rng = random.Random(seed)
    correct_c = correct_s = n = 0
    first, missed = {}, False
    for _ in range(looks):
        correct_c += sum(rng.random() < p_canary for _ in range(step))
        correct_s += sum(rng.random() < p_stable for _ in range(step))
        n += step
        if test == 'sequential':
            result = sq.accuracy_test(correct_c, n, correct_s, n, margin, ALPHA)
            decision = result.decision
            missed = missed or not result.low <= p_canary - p_stable <= result.high
        else:
            decision = sq.fixed_horizon_z_test(correct_c, n, correct_s, n, margin, ALPHA)
        if decision != sq.INCONCLUSIVE:
            first.setdefault(decision, n)
    return first, missed


def _rate(runs, decision):
    return sum(decision in first for first, _ in runs) / len(runs)


@pytest.fixture(scope='module')
def equal_runs():
    return [_looks(seed, BASE, BASE, 0.02) for seed in range(SEEDS)]


def test_an_equal_canary_is_rarely_rolled_back_however_often_analyze_looks(equal_runs):
    false_rollbacks = _rate(equal_runs, sq.WORSE)
    missed = sum(m for _, m in equal_runs) / len(equal_runs)
    print('equal canary, %d looks, %d seeds: false worse %.3f, interval missed %.3f'
          % (LOOKS, SEEDS, false_rollbacks, missed))
    assert false_rollbacks <= ALPHA
    # The guarantee itself: the true difference is inside the interval at every look.
    assert missed <= ALPHA
    # ...and an equal canary does get to pass as labels accumulate.
    assert _rate(equal_runs, sq.NOT_WORSE) >= 0.3


def test_a_fixed_horizon_test_repeated_at_the_same_looks_inflates_false_alarms():
    # Margin 0 ("is the canary worse at all?"), where the inflation is plain;
    # the sequential test on the same streams stays under alpha.
    z_runs = [_looks(seed, BASE, BASE, 0.0, test='z') for seed in range(SEEDS)]
    sequential_runs = [_looks(seed, BASE, BASE, 0.0) for seed in range(SEEDS)]
    z_rate, sequential_rate = _rate(z_runs, sq.WORSE), _rate(sequential_runs, sq.WORSE)
    print('margin 0: repeated z-test false worse %.3f, sequential %.3f'
          % (z_rate, sequential_rate))
    assert z_rate > ALPHA                # nominal 2.5% one-sided, measured 16.7%
    assert sequential_rate <= ALPHA / 2


def test_a_five_point_drop_is_rolled_back_within_5000_labels():
    runs = [_looks(seed, BASE - 0.05, BASE, 0.02) for seed in range(SEEDS)]
    power = _rate(runs, sq.WORSE)
    labels = sorted(first.get(sq.WORSE, math.inf) for first, _ in runs)
    print('5-point drop: rolled back by 5000 labels per arm in %.2f; 80%% by %s'
          % (power, labels[int(0.8 * len(labels)) - 1]))
    assert power >= 0.8
    assert _rate(runs, sq.NOT_WORSE) == 0.0


def test_a_two_point_drop_at_the_margin_is_held_and_at_margin_zero_rolled_back():
    """Samples to detect a 2-point drop (from 85%), 40 seeds, a look every 1,000:
    at the default margin 0.02 it is never passed (held); with margin 0 it is
    rolled back within 10,000 labels per arm in 80% of seeds (median 6,000)."""
    at_margin = [_looks(seed, BASE - 0.02, BASE, 0.02, step=1000, looks=10)
                 for seed in range(40)]
    assert _rate(at_margin, sq.NOT_WORSE) <= ALPHA
    strict = [_looks(seed, BASE - 0.02, BASE, 0.0, step=1000, looks=15) for seed in range(40)]
    labels = sorted(first.get(sq.WORSE, math.inf) for first, _ in strict)
    print('2-point drop, margin 0: 80%% rolled back by %s labels per arm' % labels[31])
    assert labels[31] <= 12000


def test_results_are_typed_and_bad_input_is_refused():
    result = sq.accuracy_test(700, 1000, 850, 1000, margin=0.02, alpha=0.05)
    assert result.decision == sq.WORSE and result.high < -0.02
    assert result.difference == pytest.approx(-0.15)
    assert result.low < result.difference < result.high
    assert sq.accuracy_test(850, 1000, 850, 1000).decision == sq.INCONCLUSIVE
    with pytest.raises(ValueError, match='labeled rows'):
        sq.accuracy_test(0, 0, 5, 10)
    assert sq.normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-5)


def _binomial(rng, n, p):
    """Exact Binomial(n, p) by geometric gaps (about n*p draws, not n)."""
    count, position, log_q = 0, 0, math.log(1.0 - p)
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


def test_sample_ratio_mismatch_is_detected_and_a_correct_split_rarely_flagged():
    total = 2000
    miss_split = [sq.sample_ratio(c, total - c, 10).p_value < 0.001
                  for c in (_binomial(random.Random(seed), total, 0.14) for seed in range(300))]
    assert sum(miss_split) / len(miss_split) >= 0.99
    seeds = 10000
    false_alarms = sum(sq.sample_ratio(c, total - c, 10).p_value < 0.001
                       for c in (_binomial(random.Random(seed), total, 0.10)
                                 for seed in range(seeds)))
    print('SRM false alarms: %d of %d' % (false_alarms, seeds))
    assert false_alarms / seeds <= 0.003
    exact = sq.sample_ratio(200, 1800, 10)
    assert (exact.chi2, exact.p_value) == (0.0, 1.0)
    assert sq.sample_ratio(0, 0, 10) is None and sq.sample_ratio(5, 5, 100) is None


def test_the_auc_difference_interval_covers_about_95_percent():
    from rollout.live_quality import LiveQuality

    def arm(rng, n=400, separation=1.5):
        quality = LiveQuality()
        for _ in range(n):
            label = rng.random() < 0.4
            z = rng.gauss(separation if label else 0.0, 1.0)
            quality.add(1.0 / (1.0 + math.exp(-z)), int(label))
        return quality

    covered = 0
    seeds = 300
    for seed in range(seeds):
        rng = random.Random(seed)
        a, b = arm(rng), arm(rng)
        d = sq.auc_difference(a.auc(), a.positive_scores.count, a.negative_scores.count,
                              b.auc(), b.positive_scores.count, b.negative_scores.count)
        covered += d.low <= 0.0 <= d.high
    print('AUC difference interval coverage %.3f' % (covered / seeds))
    assert 0.91 <= covered / seeds <= 0.99
