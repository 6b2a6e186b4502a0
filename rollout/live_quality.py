"""Live model quality of one version on labeled traffic: the counts `serve`
keeps per version and role as ground truth joins its predictions, and that
`rollout analyze` tests canary against stable on.

The format lives here, not in serving/, so the writer (serving/metrics.py,
key QUALITY_KEY of each version's entry in the metrics snapshot window and
lifetime) depends on rollout and not the other way round. Sufficient
statistics only (counts, sums, score histograms per class): cheap to update
under the server's lock, mergeable, and enough for accuracy, log loss,
calibration and a binned AUC. Dependency-free like rollout/stats.py.
"""
import dataclasses
import math
from typing import Optional

from rollout import stats

QUALITY_KEY = 'quality'
# Scores are binned for the AUC: 100 equal bins on [0, 1]. Pairs inside one bin
# count as ties (half), which moves the AUC by at most ~1/100 of its spread.
SCORE_BOUNDS = tuple(round(0.01 * i, 2) for i in range(1, 101))
DECISION_THRESHOLD = 0.5     # the same 0.5 the Evaluator's binary_accuracy uses
_EPSILON = 1e-7              # log loss clips p to [eps, 1 - eps], as Keras does


@dataclasses.dataclass
class LiveQuality:
    """Labeled predictions of one version: what it got right, and how sure it was."""
    labeled: int = 0
    correct: int = 0              # (p >= DECISION_THRESHOLD) == label
    positives: int = 0            # label == 1
    predicted_sum: float = 0.0    # sum of p (calibration: mean p vs observed rate)
    log_loss_sum: float = 0.0     # sum of -log likelihood of the label
    positive_scores: stats.Histogram = dataclasses.field(
        default_factory=lambda: stats.Histogram(SCORE_BOUNDS))
    negative_scores: stats.Histogram = dataclasses.field(
        default_factory=lambda: stats.Histogram(SCORE_BOUNDS))

    def add(self, probability, label):
        """One labeled prediction: `probability` of the positive class, `label` 0 or 1."""
        p = min(max(float(probability), 0.0), 1.0)
        positive = bool(label)
        self.labeled += 1
        self.correct += int((p >= DECISION_THRESHOLD) == positive)
        self.positives += int(positive)
        self.predicted_sum += p
        clipped = min(max(p, _EPSILON), 1.0 - _EPSILON)
        self.log_loss_sum -= math.log(clipped if positive else 1.0 - clipped)
        (self.positive_scores if positive else self.negative_scores).observe(p)

    def merge(self, other):
        """This plus `other` (e.g. one phase's windows, or a restarted server's)."""
        merged = LiveQuality(
            self.labeled + other.labeled, self.correct + other.correct,
            self.positives + other.positives, self.predicted_sum + other.predicted_sum,
            self.log_loss_sum + other.log_loss_sum)
        for name in ('positive_scores', 'negative_scores'):
            a, b = getattr(self, name), getattr(other, name)
            setattr(merged, name, stats.Histogram(
                SCORE_BOUNDS, [x + y for x, y in zip(a.counts, b.counts)], a.sum + b.sum))
        return merged

    @property
    def accuracy(self) -> Optional[float]:
        return self.correct / self.labeled if self.labeled else None

    @property
    def log_loss(self) -> Optional[float]:
        return self.log_loss_sum / self.labeled if self.labeled else None

    @property
    def mean_predicted(self) -> Optional[float]:
        return self.predicted_sum / self.labeled if self.labeled else None

    @property
    def observed_rate(self) -> Optional[float]:
        return self.positives / self.labeled if self.labeled else None

    @property
    def calibration_gap(self) -> Optional[float]:
        """Mean predicted probability minus the observed positive rate."""
        return None if not self.labeled else self.mean_predicted - self.observed_rate

    def auc(self) -> Optional[float]:
        """P(score of a positive > score of a negative), ties half (Mann-Whitney),
        on the binned scores; None without both classes."""
        pos, neg = self.positive_scores.counts, self.negative_scores.counts
        n_pos, n_neg = sum(pos), sum(neg)
        if not n_pos or not n_neg:
            return None
        below, wins = 0, 0.0
        for p_count, n_count in zip(pos, neg):
            wins += p_count * (below + 0.5 * n_count)
            below += n_count
        return wins / (n_pos * n_neg)

    def to_dict(self):
        return {'labeled': self.labeled, 'correct': self.correct, 'positives': self.positives,
                'predicted_sum': self.predicted_sum, 'log_loss_sum': self.log_loss_sum,
                'positive_scores': self.positive_scores.to_dict(),
                'negative_scores': self.negative_scores.to_dict(),
                # Derived, for people reading the snapshot; from_dict ignores them.
                'accuracy': self.accuracy, 'log_loss': self.log_loss, 'auc': self.auc(),
                'mean_predicted': self.mean_predicted, 'observed_rate': self.observed_rate}

    @classmethod
    def from_dict(cls, data, where=QUALITY_KEY):
        """Read back to_dict's output; ValueError naming `where`.field if damaged."""
        if not isinstance(data, dict):
            raise ValueError('%s: expected an object, got %r' % (where, type(data).__name__))
        try:
            quality = cls(int(data['labeled']), int(data['correct']), int(data['positives']),
                          float(data['predicted_sum']), float(data['log_loss_sum']))
            for name in ('positive_scores', 'negative_scores'):
                histogram = stats.Histogram.from_dict(data[name])
                if histogram.bounds != SCORE_BOUNDS:
                    raise ValueError('%s has other bucket bounds' % name)
                setattr(quality, name, histogram)
        except KeyError as e:
            raise ValueError('%s: missing field %s' % (where, e)) from None
        except (TypeError, ValueError) as e:
            raise ValueError('%s: %s' % (where, e)) from None
        if not 0 <= quality.correct <= quality.labeled or not 0 <= quality.positives <= (
                quality.labeled):
            raise ValueError('%s: counts do not add up (labeled %d, correct %d, positives %d)'
                             % (where, quality.labeled, quality.correct, quality.positives))
        return quality
