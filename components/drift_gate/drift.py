"""Pure helpers: a span's statistics against the baseline's, with TFDV and the schema's comparators.

TFDV's `validate_statistics(statistics, schema, previous_statistics=...)`
evaluates each feature's `drift_comparator` (L-infinity distance for
categorical features, approximate Jensen-Shannon divergence for numeric ones)
and reports every measured distance in `drift_skew_info`, drifted or not.
The thresholds are the schema's: this module adds none of its own.
"""
import dataclasses
from typing import Sequence, Tuple, Optional

from common import tfx_outputs


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    feature: str
    measure: str        # e.g. 'Jensen-Shannon divergence'
    distance: float
    threshold: float
    drifted: bool       # TFDV flagged it: distance above the schema's threshold
    allowed: bool       # drifted, but listed in allowed_drift

    @property
    def blocking(self) -> bool:
        return self.drifted and not self.allowed

    def describe(self) -> str:
        verdict = ('DRIFTED' if self.blocking else
                   'drifted, allowed (allowed_drift)' if self.drifted else 'ok')
        return "feature '%s': %s %.4f, threshold %.2f: %s" % (
            self.feature, self.measure, self.distance, self.threshold, verdict)


@dataclasses.dataclass(frozen=True)
class DriftResult:
    """The drift verdict of one span against the baseline's training data."""
    span: str                  # the new data, in words
    baseline: str              # e.g. 'span 1 (stable v1 trained on it)'
    features: Tuple[FeatureDrift, ...]

    @property
    def blocking(self) -> Tuple[FeatureDrift, ...]:
        return tuple(f for f in self.features if f.blocking)

    def error_message(self) -> str:
        """First line: what and why; then one line per drifted feature; then the way out."""
        lines = ['data drift: %s is too far from %s; nothing was trained or pushed. Check '
                 'the data; if the change is expected, accept it with --allow-drift FEATURE '
                 '(config field allowed_drift):' % (self.span, self.baseline)]
        lines += ['  ' + f.describe() for f in self.blocking]
        return '\n'.join(lines)


def compare(statistics, baseline_statistics, schema, span: str, baseline: str,
            allowed: Sequence[str] = ()):
    """(DriftResult, the TFDV Anomalies proto) for `statistics` vs. `baseline_statistics`.

    Both are DatasetFeatureStatisticsList protos; `schema` holds the
    drift_comparators (features without one are not compared).
    """
    import tensorflow_data_validation as tfdv
    anomalies = tfdv.validate_statistics(statistics, schema,
                                         previous_statistics=baseline_statistics)
    return result_from(anomalies, span, baseline, allowed), anomalies


def result_from(anomalies, span: str, baseline: str, allowed: Sequence[str] = ()) -> DriftResult:
    """The DriftResult recorded in a TFDV Anomalies proto."""
    allowed = set(allowed)
    features = tuple(FeatureDrift(feature=m.feature, measure=m.measure, distance=m.distance,
                                  threshold=m.threshold, drifted=m.drifted,
                                  allowed=m.feature in allowed)
                     for m in tfx_outputs.drift_measurements(anomalies))
    return DriftResult(span=span, baseline=baseline, features=features)


def unknown_allowed(allowed: Sequence[str], schema) -> Optional[str]:
    """An error line if `allowed` names a feature the schema does not compare."""
    compared = {f.name for f in schema.feature if f.HasField('drift_comparator')}
    unknown = sorted(set(allowed) - compared)
    if not unknown:
        return None
    return ('allowed_drift names %s, which the schema has no drift_comparator for; '
            'features compared: %s' % (', '.join(unknown), ', '.join(sorted(compared)) or 'none'))
