"""Reads the payload files behind TFX artifacts, without importing TensorFlow.

ML Metadata holds ids, URIs and properties; split sizes, anomalies, schema
features, metrics and threshold results live in files under each artifact's
URI. The TFMA metrics and TFDV anomalies readers are shared
(common/tfx_outputs.py, which also explains how TFMA's protos are read
without TensorFlow); this module turns what they read into lineage's JSON
rows and reads what only lineage shows. Every reader returns None when the
files are missing or not local, so a store whose pipeline root was deleted
(or lives on gs://) still shows its lineage, without reaching the network.
"""

import glob
import json
import os
import re

from google.protobuf import json_format
from google.protobuf import text_format

from common import tfx_outputs
from common.storage import local_path
from common.tfx_outputs import slice_name, slice_value, tfma_class


def _split_dirs(uri):
    """{split name: directory} of a TFX per-split artifact (Split-train/...)."""
    root = local_path(uri)
    if root is None:
        return None
    result = {}
    prefix = tfx_outputs.SPLIT_PREFIX
    for path in sorted(glob.glob(os.path.join(root, prefix + '*'))):
        result[os.path.basename(path)[len(prefix):]] = path
    return result


def split_sizes(statistics_uri):
    """{split: number of examples} from an ExampleStatistics artifact, or None."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    dirs = _split_dirs(statistics_uri)
    if not dirs:
        return None
    sizes = {}
    for split, path in dirs.items():
        stats_file = os.path.join(path, 'FeatureStats.pb')
        if not os.path.isfile(stats_file):
            continue
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        with open(stats_file, 'rb') as f:
            stats.ParseFromString(f.read())
        sizes[split] = sum(int(d.num_examples) for d in stats.datasets)
    return sizes or None


def _anomaly_row(feature, info):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    return {'feature': feature,
            'severity': anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
            'description': info.short_description or info.description}


def anomalies(anomalies_uri):
    """{split: [{'feature', 'severity', 'description'}]} or None if unreadable."""
    root = local_path(anomalies_uri)
    by_split = tfx_outputs.anomalies_by_split(root) if root else None
    if by_split is None:
        return None
    result = {}
    for split, found in by_split.items():
        rows = [_anomaly_row(feature, info) for feature, info in sorted(found.anomaly_info.items())]
        if found.HasField('dataset_anomaly_info'):
            rows.append(_anomaly_row('(dataset)', found.dataset_anomaly_info))
        result[split] = rows
    return result


def schema(schema_uri):
    """{'file', 'features': {name: {type, presence, domain, text}}} or None."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    root = local_path(schema_uri)
    if root is None:
        return None
    path = os.path.join(root, 'schema.pbtxt')
    if not os.path.isfile(path):
        return None
    parsed = schema_pb2.Schema()
    with open(path, encoding='utf-8') as f:
        text_format.Parse(f.read(), parsed)
    features = {}
    for feature in parsed.feature:
        domain = feature.WhichOneof('domain_info')
        if domain == 'domain':
            domain = 'domain ' + feature.domain
        features[feature.name] = {
            'type': schema_pb2.FeatureType.Name(feature.type),
            'presence': (round(feature.presence.min_fraction, 6)
                         if feature.HasField('presence') else None),
            'domain': domain,
            # The whole definition, so a diff catches any change in it.
            'text': text_format.MessageToString(feature, as_one_line=True),
        }
    for domain in parsed.string_domain:
        for info in features.values():
            if info['domain'] == 'domain ' + domain.name:
                info['text'] += ' | ' + text_format.MessageToString(domain, as_one_line=True)
    return {'file': path, 'features': features}


def metrics(evaluation_uri):
    """Metrics per slice of a ModelEvaluation artifact, or None if unreadable.

    Returns [{'slice', 'key', 'candidate': {...}, 'baseline': {...},
    'diff': {...}}], overall first (common.tfx_outputs.slice_metrics, as JSON).
    """
    root = local_path(evaluation_uri)
    rows = tfx_outputs.slice_metrics(root) if root else None
    if rows is None:
        return None
    return [{'slice': row.slice, 'key': [list(pair) for pair in row.key],
             'candidate': row.candidate, 'baseline': row.baseline, 'diff': row.diff}
            for row in rows]


def validation(evaluation_uri):
    """{'ok': bool, 'failures': [text]} from TFMA's validations file, or None."""
    root = local_path(evaluation_uri)
    if root is None:
        return None
    files = sorted(glob.glob(os.path.join(root, 'validations*')))
    if not files:
        return None
    message = tfma_class('tensorflow_model_analysis.ValidationResult')
    records = list(tfx_outputs.tfrecords(files[0]))
    if not records:
        return None
    result = message.FromString(records[0])
    failures = []
    for per_slice in result.metric_validations_per_slice:
        key = [[k.column, slice_value(k)] for k in per_slice.slice_key.single_slice_keys]
        for failure in per_slice.failures:
            value = (failure.metric_value.double_value.value
                     if failure.metric_value.HasField('double_value') else None)
            is_change = failure.metric_key.is_diff
            text = (f'{failure.metric_key.name}{" change vs baseline" if is_change else ""} '
                    f'on {slice_name(key)}')
            if value is not None:
                text += f' = {value:+.4f}' if is_change else f' = {value:.4f}'
            needs = _needs(failure.metric_threshold, is_change)
            if needs:
                text += f' (needs {needs})'
            if failure.message:
                text += f': {failure.message}'
            failures.append(text)
    if result.missing_thresholds:
        failures.append('a threshold had no metric to check')
    for spec in result.missing_slices:
        failures.append(f'slice {_describe_slicing([spec])} had no examples')
    # rubber_stamp: the first model (no baseline), judged on values only.
    return {'ok': bool(result.validation_ok), 'failures': failures,
            'rubber_stamp': bool(result.rubber_stamp)}


def _needs(threshold, is_change):
    """'>= -0.005' for the bound a failed threshold set, or ''."""
    parts = []
    if is_change and threshold.HasField('change_threshold'):
        ct = threshold.change_threshold
        op = '<=' if ct.direction == 1 else '>='  # 1: LOWER_IS_BETTER.
        if ct.HasField('absolute'):
            parts.append(f'{op} {ct.absolute.value:+.4g}')
        if ct.HasField('relative'):
            parts.append(f'relative {op} {ct.relative.value:+.4g}')
    elif threshold.HasField('value_threshold'):
        vt = threshold.value_threshold
        if vt.HasField('lower_bound'):
            parts.append(f'>= {vt.lower_bound.value:.4g}')
        if vt.HasField('upper_bound'):
            parts.append(f'<= {vt.upper_bound.value:.4g}')
    return ' and '.join(parts)


def _metric_name(class_name, config_json):
    """TFMA's default metric name: the class name in snake_case (AUC -> auc)."""
    try:
        name = json.loads(config_json or '{}').get('name')
    except ValueError:
        name = None
    if name:
        return name
    return re.sub(r'(?<=[a-z0-9])([A-Z])', r'_\1', class_name).lower()


def _describe_slicing(specs):
    if not specs:
        return 'overall'
    names = []
    for spec in specs:
        if not spec.feature_keys and not spec.feature_values:
            names.append('overall')
        else:
            names.append(', '.join(list(spec.feature_keys) +
                                   [f'{k}={v}' for k, v in spec.feature_values.items()]))
    return '; '.join(names)


def _threshold_rows(metric, threshold, slicing):
    rows = []
    if threshold.HasField('value_threshold'):
        vt = threshold.value_threshold
        row = {'metric': metric, 'slices': slicing, 'kind': 'value'}
        if vt.HasField('lower_bound'):
            row['lower_bound'] = vt.lower_bound.value
        if vt.HasField('upper_bound'):
            row['upper_bound'] = vt.upper_bound.value
        rows.append(row)
    if threshold.HasField('change_threshold'):
        ct = threshold.change_threshold
        row = {'metric': metric, 'slices': slicing, 'kind': 'change vs baseline',
               'direction': ct.DESCRIPTOR.fields_by_name['direction']
               .enum_type.values_by_number[ct.direction].name.lower()}
        if ct.HasField('absolute'):
            row['absolute'] = ct.absolute.value
        if ct.HasField('relative'):
            row['relative'] = ct.relative.value
        rows.append(row)
    return rows


def thresholds(eval_config_json):
    """Threshold rows from an EvalConfig in proto-JSON (either field style)."""
    if not eval_config_json:
        return []
    config = tfma_class('tensorflow_model_analysis.EvalConfig')()
    json_format.Parse(eval_config_json, config, ignore_unknown_fields=True)
    rows = []
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            name = _metric_name(metric.class_name, metric.config)
            if metric.HasField('threshold'):
                rows.extend(_threshold_rows(name, metric.threshold, 'every slice'))
            for per_slice in metric.per_slice_thresholds:
                rows.extend(_threshold_rows(name, per_slice.threshold,
                                            _describe_slicing(per_slice.slicing_specs)))
        for name, threshold in sorted(spec.thresholds.items()):
            rows.extend(_threshold_rows(name, threshold, 'every slice'))
    return rows


def evaluated_config(evaluation_uri):
    """The EvalConfig TFMA actually ran (eval_config.json), as JSON text, or None.

    Preferred over the Evaluator's `eval_config` property: without a baseline
    TFX drops the change thresholds, and this file shows what was applied.
    """
    root = local_path(evaluation_uri)
    path = root and os.path.join(root, 'eval_config.json')
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        loaded = json.load(f)
    return json.dumps(loaded.get('evalConfig', loaded))
