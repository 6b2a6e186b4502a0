"""Pure helpers: decide which TFDV anomalies block a run, and say why in one line."""
from tensorflow_metadata.proto.v0 import anomalies_pb2


def blocking_anomalies(anomalies, allowed=()):
    """Returns [(feature, short description, description)] that block training.

    Every ERROR-severity anomaly blocks, unless its feature name or its short
    description (e.g. "Unexpected string values") is listed in `allowed` —
    the escape hatch for a change the team has reviewed and accepted.
    Dataset-level anomalies (e.g. too few examples) block the same way.
    """
    allowed = set(allowed)
    found = []
    items = list(anomalies.anomaly_info.items())
    if anomalies.HasField('dataset_anomaly_info'):
        items.append(('<dataset>', anomalies.dataset_anomaly_info))
    for feature, info in sorted(items):
        if info.severity != anomalies_pb2.AnomalyInfo.ERROR:
            continue
        if feature in allowed or info.short_description in allowed:
            continue
        found.append((feature, info.short_description, info.description))
    return found


def describe(blocking_by_split):
    """One readable message for {split: [(feature, short, long), ...]}."""
    parts = []
    for split, items in sorted(blocking_by_split.items()):
        for feature, short, long in items:
            parts.append("split '%s', feature '%s': %s (%s)" % (split, feature, short, long))
    return ('blocking data anomalies, nothing was trained or pushed: ' + '; '.join(parts)
            + '. Fix the span, or update the schema if the change is expected '
            '(or list the anomaly in allowed_anomalies).')
