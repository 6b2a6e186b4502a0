"""The histogram maths the server records and `rollout analyze` reads (fast, no TensorFlow)."""
import pytest

from rollout import stats


def test_histogram_quantile_interpolates_like_prometheus():
    h = stats.Histogram((0.001, 0.002, 0.005, 0.01))
    for v in [0.0015] * 98 + [0.007, 0.5]:
        h.observe(v)
    assert h.count == 100
    assert h.quantile(0.5) == pytest.approx(0.001 + 0.001 * 50 / 98)
    assert 0.005 < h.quantile(0.99) <= 0.01
    assert h.quantile(1.0) == 0.01       # the overflow bucket reports its lower bound
    assert stats.Histogram.from_dict(h.to_dict()).counts == h.counts
    assert stats.Histogram((1,)).quantile(0.5) is None


def test_js_divergence():
    assert stats.js_divergence([0.5, 0.5], [0.5, 0.5]) == 0
    assert stats.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert 0 < stats.js_divergence([0.6, 0.4], [0.4, 0.6]) < 0.05
    assert stats.js_divergence(None, [1]) is None
