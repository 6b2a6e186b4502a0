"""Reads the payload files behind TFX artifacts, without importing TensorFlow.

ML Metadata holds ids, URIs and properties; split sizes, anomalies, schema
features, metrics and threshold results live in files under each artifact's
URI. Importing TFMA or TFDV to read them would pull in TensorFlow (~8 s before
the first line is printed), so this module reads the protos directly:
TFDV's are in the light `tensorflow_metadata` package, and TFMA's message
classes are built from the descriptors inside its generated *_pb2 modules
(see `_tfma_class`). Every reader returns None when the files are missing or
not local, so a store whose pipeline root was deleted still shows its lineage.
"""

import ast
import glob
import importlib.util
import json
import os
import re
import struct

from google.protobuf import descriptor_pool
from google.protobuf import json_format
from google.protobuf import message_factory
from google.protobuf import text_format

# TFMA proto files, in dependency order.
_TFMA_PROTO_MODULES = ('config', 'metrics_for_slice', 'validation_result')


def local_path(uri):
    """The filesystem path of a local artifact URI, else None (gs://, s3://...)."""
    if not uri:
        return None
    if uri.startswith('file://'):
        uri = uri[len('file://'):]
    if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*://', uri):
        return None
    return uri if os.path.exists(uri) else None


def _register_tfma_descriptors(pool):
    """Adds TFMA's proto descriptors to `pool` from its *_pb2 sources.

    Importing `tensorflow_model_analysis.proto.*_pb2` would run TFMA's package
    __init__, which imports TensorFlow. The serialized descriptor is the one
    bytes literal passed to AddSerializedFile in each generated module, so it
    is read with `ast` instead of executing the module. Adding the same file
    again later (when TFMA itself is imported) is a no-op for protobuf.
    """
    from google.protobuf import wrappers_pb2  # noqa: F401  (a dependency of config.proto)

    spec = importlib.util.find_spec('tensorflow_model_analysis')
    if spec is None or not spec.origin:
        raise ImportError('tensorflow_model_analysis is not installed')
    proto_dir = os.path.join(os.path.dirname(spec.origin), 'proto')
    for module in _TFMA_PROTO_MODULES:
        try:
            pool.FindFileByName(f'tensorflow_model_analysis/proto/{module}.proto')
            continue
        except KeyError:
            pass
        with open(os.path.join(proto_dir, module + '_pb2.py'), encoding='utf-8') as f:
            tree = ast.parse(f.read())
        serialized = next(
            (node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call)
             and getattr(node.func, 'attr', '') == 'AddSerializedFile'
             and node.args and isinstance(node.args[0], ast.Constant)), None)
        if serialized is None:
            raise ImportError(f'no serialized descriptor in {module}_pb2.py')
        pool.AddSerializedFile(serialized)


def _tfma_class(full_name):
    """The message class for a TFMA proto, e.g. 'tensorflow_model_analysis.EvalConfig'."""
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        try:
            _register_tfma_descriptors(pool)
        except (ImportError, OSError, SyntaxError, TypeError):
            # An unexpected TFMA layout: the slow but sure way.
            import tensorflow_model_analysis  # noqa: F401
        descriptor = pool.FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


def tfrecords(path):
    """Yields the records of an uncompressed TFRecord file (what TFMA writes).

    Format: uint64 length, uint32 CRC of the length, data, uint32 CRC of the
    data. CRCs are not checked (no crc32c in the standard library); a
    truncated file ends the iteration with ValueError.
    """
    with open(path, 'rb') as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f'{path}: truncated TFRecord header')
            (length,) = struct.unpack('<Q', header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                raise ValueError(f'{path}: truncated TFRecord')
            yield data


def _split_dirs(uri):
    """{split name: directory} of a TFX per-split artifact (Split-train/...)."""
    root = local_path(uri)
    if root is None:
        return None
    result = {}
    for path in sorted(glob.glob(os.path.join(root, 'Split-*'))):
        result[os.path.basename(path)[len('Split-'):]] = path
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


def anomalies(anomalies_uri):
    """{split: [{'feature', 'severity', 'description'}]} or None if unreadable."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    dirs = _split_dirs(anomalies_uri)
    if not dirs:
        return None
    result = {}
    for split, path in dirs.items():
        diff_file = os.path.join(path, 'SchemaDiff.pb')
        if not os.path.isfile(diff_file):
            continue
        found = anomalies_pb2.Anomalies()
        with open(diff_file, 'rb') as f:
            found.ParseFromString(f.read())
        rows = []
        for feature, info in sorted(found.anomaly_info.items()):
            rows.append({
                'feature': feature,
                'severity': anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                'description': info.short_description or info.description,
            })
        if found.HasField('dataset_anomaly_info'):
            info = found.dataset_anomaly_info
            rows.append({'feature': '(dataset)',
                         'severity': anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                         'description': info.short_description or info.description})
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


def _slice_value(single_key):
    kind = single_key.WhichOneof('kind')
    value = getattr(single_key, kind) if kind else None
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def slice_name(key):
    """'overall' or 'feature=value[, feature=value]' for a [[column, value]] key."""
    if not key:
        return 'overall'
    return ', '.join(f'{column}={value}' for column, value in key)


def _slice_sort_key(row):
    # Overall first, then by feature, numeric values in numeric order.
    return (len(row['key']),
            [(c, isinstance(v, str), v if not isinstance(v, str) else 0, str(v))
             for c, v in row['key']])


def metrics(evaluation_uri):
    """Metrics per slice of a ModelEvaluation artifact, or None if unreadable.

    Returns [{'slice', 'key', 'candidate': {...}, 'baseline': {...},
    'diff': {...}}], overall first. A single-model evaluation (no baseline)
    stores its metrics under model name '', reported as 'candidate'. When a
    metric exists both as the Keras-compiled value and as the TFMA-computed
    one (the one thresholds apply to, with `example_weighted` set), the TFMA
    value wins.
    """
    root = local_path(evaluation_uri)
    if root is None:
        return None
    files = sorted(glob.glob(os.path.join(root, 'metrics*')))
    if not files:
        return None
    message = _tfma_class('tensorflow_model_analysis.MetricsForSlice')
    rows = {}
    for path in files:
        for record in tfrecords(path):
            metrics_for_slice = message.FromString(record)
            if metrics_for_slice.HasField('cross_slice_key'):
                continue
            key = [[k.column, _slice_value(k)]
                   for k in metrics_for_slice.slice_key.single_slice_keys]
            name = slice_name(key)
            row = rows.setdefault(name, {'slice': name, 'key': key, 'candidate': {},
                                         'baseline': {}, 'diff': {}})
            priority = {}
            for kv in metrics_for_slice.metric_keys_and_values:
                if kv.key.HasField('sub_key') or kv.key.HasField('aggregation_type'):
                    continue
                if not kv.value.HasField('double_value'):
                    continue
                group = 'diff' if kv.key.is_diff else (
                    'baseline' if kv.key.model_name == 'baseline' else 'candidate')
                rank = 1 if kv.key.HasField('example_weighted') else 0
                slot = (group, kv.key.name)
                if priority.get(slot, -1) <= rank:
                    priority[slot] = rank
                    row[group][kv.key.name] = kv.value.double_value.value
    return sorted(rows.values(), key=_slice_sort_key)


def validation(evaluation_uri):
    """{'ok': bool, 'failures': [text]} from TFMA's validations file, or None."""
    root = local_path(evaluation_uri)
    if root is None:
        return None
    files = sorted(glob.glob(os.path.join(root, 'validations*')))
    if not files:
        return None
    message = _tfma_class('tensorflow_model_analysis.ValidationResult')
    records = list(tfrecords(files[0]))
    if not records:
        return None
    result = message.FromString(records[0])
    failures = []
    for per_slice in result.metric_validations_per_slice:
        key = [[k.column, _slice_value(k)] for k in per_slice.slice_key.single_slice_keys]
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
    config = _tfma_class('tensorflow_model_analysis.EvalConfig')()
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
