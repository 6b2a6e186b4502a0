"""Small, dependency-free statistics shared by the server and `rollout analyze`.

The server keeps fixed-bucket histograms (cheap to update under a lock, easy to
merge and to write as JSON); `rollout analyze` reads them back to estimate
quantiles and compare distributions. Kept free of NumPy/TensorFlow so the
analyze command starts instantly.
"""
import bisect
import math

# Latency buckets (seconds, upper bounds): ~1.5x apart from 0.5 ms to 10 s, so
# an interpolated p99 is within a third of a bucket of the true value.
LATENCY_BOUNDS = (0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
                  0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                  1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Predicted probabilities: 20 equal bins on [0, 1].
PREDICTION_BOUNDS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# |p_stable - p_canary| in shadow mode.
DIFF_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
               0.5, 1.0)


class Histogram:
    """Counts per bucket (upper bounds inclusive, plus an overflow bucket)."""

    def __init__(self, bounds, counts=None, total=0.0):
        self.bounds = tuple(bounds)
        self.counts = list(counts) if counts is not None else [0] * (len(self.bounds) + 1)
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError('histogram needs %d counts, got %d'
                             % (len(self.bounds) + 1, len(self.counts)))
        self.sum = float(total)

    @property
    def count(self):
        return sum(self.counts)

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def mean(self):
        count = self.count
        return self.sum / count if count else None

    def quantile(self, q):
        """Estimated q-quantile, interpolating linearly inside the bucket.

        The same estimate as Prometheus' histogram_quantile(): the first
        bucket starts at 0 and the overflow bucket reports its lower bound.
        """
        count = self.count
        if not count:
            return None
        rank = q * count
        seen = 0
        for index, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if index == len(self.bounds):
                    return self.bounds[-1]
                low = self.bounds[index - 1] if index else 0.0
                high = self.bounds[index]
                return low + (high - low) * max(rank - seen, 0.0) / n
            seen += n
        return self.bounds[-1]

    def distribution(self):
        count = self.count
        return [n / count for n in self.counts] if count else None

    def to_dict(self):
        return {'bounds': list(self.bounds), 'counts': list(self.counts), 'sum': self.sum}

    @classmethod
    def from_dict(cls, data):
        return cls(data['bounds'], data['counts'], data.get('sum', 0.0))


def js_divergence(p, q):
    """Jensen-Shannon divergence (base 2, so 0..1) of two discrete distributions.

    The same measure TFDV's drift/skew comparators use for numeric features;
    unlike KL or PSI it stays finite when one side has an empty bucket.
    """
    if p is None or q is None or len(p) != len(q):
        return None
    divergence = 0.0
    for a, b in zip(p, q):
        m = (a + b) / 2
        if a:
            divergence += 0.5 * a * math.log2(a / m)
        if b:
            divergence += 0.5 * b * math.log2(b / m)
    return max(0.0, divergence)
