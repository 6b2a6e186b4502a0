"""`tfx-canary capture validate`: TFDV on captured serving data.

Three checks, all TFDV's own, against the training statistics and schema:

* the capture against the schema in the SERVING environment (the label is
  not expected there);
* training/serving skew: the schema's skew_comparators, training statistics
  vs. capture statistics;
* drift: the schema's drift_comparators, capture vs. the previous capture
  span (or, for the first capture span, the training statistics: the span
  the model learned from is the one before it).

Captured CSV rows are turned into tf.Examples as CsvExampleGen does (an empty
cell is a feature with no values; a column empty in every row is no feature),
so their statistics are comparable with the pipeline's StatisticsGen output.
"""
import csv
import dataclasses
import glob
import os

from common.locations import DEFAULT_WORKSPACE
from pipeline.errors import TfxCanaryError
from serving import capture as capture_mod

SERVING = 'SERVING'


class CaptureError(TfxCanaryError):
    """The capture, schema or statistics cannot be read."""


@dataclasses.dataclass
class Inputs:
    files: list
    rows: int
    schema_path: str
    stats_path: str
    previous: str      # description of the drift baseline


def _latest_artifact(workspace, component, output):
    """Newest output dir of a pipeline component, by execution id."""
    root = os.path.join(workspace, 'pipeline', component, output)
    try:
        ids = [int(n) for n in os.listdir(root) if n.isdigit()]
    except FileNotFoundError:
        return None
    return os.path.join(root, str(max(ids))) if ids else None


def find_schema(workspace, schema_path=None):
    if schema_path:
        if not os.path.isfile(schema_path):
            raise CaptureError('--schema %s does not exist' % schema_path)
        return schema_path
    artifact = _latest_artifact(workspace, 'ImportSchemaGen', 'schema')
    candidate = artifact and os.path.join(artifact, 'schema.pbtxt')
    if candidate and os.path.isfile(candidate):
        return candidate
    raise CaptureError('no schema found in %s/pipeline/ImportSchemaGen: pass --workspace (a '
                       'workspace the pipeline ran in) or --schema FILE' % workspace)


def find_stats(workspace, stats_path=None):
    if not stats_path:
        artifact = _latest_artifact(workspace, 'StatisticsGen', 'statistics')
        if artifact is None:
            raise CaptureError('no training statistics found in %s/pipeline/StatisticsGen: '
                               'pass --workspace or --stats FILE' % workspace)
        stats_path = os.path.join(artifact, 'Split-train')
    if os.path.isdir(stats_path):
        found = sorted(glob.glob(os.path.join(stats_path, 'FeatureStats.pb'))
                       + glob.glob(os.path.join(stats_path, '*.tfrecord*')))
        if not found:
            raise CaptureError('%s holds no FeatureStats.pb' % stats_path)
        stats_path = found[0]
    if not os.path.isfile(stats_path):
        raise CaptureError('--stats %s does not exist' % stats_path)
    return stats_path


def load_schema(path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def load_stats(path):
    import tensorflow_data_validation as tfdv
    if path.endswith('.pb'):
        return tfdv.load_stats_binary(path)
    return tfdv.load_statistics(path)


def _feature(value, kind):
    from tensorflow.core.example import feature_pb2
    feature = feature_pb2.Feature()
    if value == '':
        return feature  # CsvExampleGen: an empty cell is a feature with no values.
    if kind == 'INT':
        feature.int64_list.value.append(int(value))
    elif kind == 'FLOAT':
        feature.float_list.value.append(float(value))
    else:
        feature.bytes_list.value.append(value.encode('utf-8'))
    return feature


def _column_kinds(header, rows, schema):
    """Each column's type: the schema's, else inferred like CsvExampleGen (int > float > bytes)."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    known = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}
    kinds = {}
    for i, name in enumerate(header):
        if name in known:
            kinds[name] = known[name]
            continue
        kind = 'INT'
        for row in rows:
            value = row[i]
            if value == '':
                continue
            try:
                int(value)
                continue
            except ValueError:
                pass
            try:
                float(value)
                kind = 'FLOAT'
            except ValueError:
                kind = 'BYTES'
                break
        kinds[name] = kind
    return kinds


def read_csv(paths):
    """(header, rows) of CSV files sharing one header."""
    header, rows = None, []
    for path in paths:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.reader(f)
            this = next(reader, None)
            if this is None:
                continue
            if header is None:
                header = this
            elif this != header:
                raise CaptureError('%s has a different header from %s: a span must have one '
                                   'header' % (path, paths[0]))
            for number, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise CaptureError('%s line %d has %d fields, the header %d'
                                       % (path, number, len(row), len(header)))
                rows.append(row)
    if header is None or not rows:
        raise CaptureError('no captured rows in %s' % ', '.join(paths))
    return header, rows


def statistics_for(paths, schema):
    """TFDV statistics of CSV files, decoded as CsvExampleGen would."""
    from tensorflow_data_validation.statistics import stats_impl
    import tensorflow_data_validation as tfdv
    from tensorflow.core.example import example_pb2
    from tfx_bsl.coders import example_coder

    header, rows = read_csv(paths)
    kinds = _column_kinds(header, rows, schema)
    # CsvExampleGen infers a column's type from its values, so a column empty
    # in every row becomes no feature at all ("Column dropped" to TFDV).
    present = [any(row[i] != '' for row in rows) for i in range(len(header))]
    serialized = []
    for row in rows:
        example = example_pb2.Example()
        for name, value, keep in zip(header, row, present):
            if not keep:
                continue
            try:
                example.features.feature[name].CopyFrom(_feature(value, kinds[name]))
            except ValueError:
                # The schema says INT/FLOAT but the cell is not: keep it as
                # bytes so TFDV reports the type problem instead of us crashing.
                example.features.feature[name].bytes_list.value.append(value.encode())
        serialized.append(example.SerializeToString())
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    record_batch = decoder.DecodeBatch(serialized)
    options = tfdv.StatsOptions(schema=schema)
    return stats_impl.generate_statistics_in_memory(record_batch, options), len(rows)


def serving_schema(schema, served_columns):
    """The schema with features the serving signature cannot carry taken out of SERVING.

    A client of the REST API can only send the signature's inputs, so e.g. the
    census tracts are never in captured data; checking them would only
    report what the serving contract already says. Returns (schema, names).
    """
    copy = type(schema)()
    copy.CopyFrom(schema)
    excluded = []
    for feature in copy.feature:
        if feature.name in served_columns or SERVING in feature.not_in_environment:
            continue
        feature.not_in_environment.append(SERVING)
        excluded.append(feature.name)
    return copy, excluded


def _comparators(schema):
    """{feature: {'skew': (kind, threshold), 'drift': (kind, threshold)}}."""
    found = {}
    for feature in schema.feature:
        for which in ('skew', 'drift'):
            comparator = getattr(feature, which + '_comparator')
            for kind in ('infinity_norm', 'jensen_shannon_divergence'):
                if comparator.HasField(kind):
                    found.setdefault(feature.name, {})[which] = (
                        kind, getattr(comparator, kind).threshold)
    return found


_KIND_NAMES = {'infinity_norm': 'L-infinity', 'jensen_shannon_divergence': 'Jensen-Shannon'}


def _measurements(anomalies, which):
    """{feature: value} from TFDV's drift_skew_info."""
    values = {}
    for info in anomalies.drift_skew_info:
        name = '.'.join(info.path.step)
        for m in getattr(info, which + '_measurements'):
            values[name] = m.value
    return values


def _anomaly_list(anomalies, keep=None):
    out = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        reasons = [r for r in info.reason if keep is None or keep(r)]
        if reasons:
            out.append({'feature': name,
                        'short': '; '.join(r.short_description for r in reasons),
                        'description': ' '.join(r.description for r in reasons)})
    return out


def _is_comparator(reason, word):
    return word in reason.short_description.lower() or word in reason.description.lower()


def validate(capture_root, span=None, workspace=DEFAULT_WORKSPACE, schema_path=None,
             stats_path=None, served_columns=None):
    """Runs the three checks; returns a JSON-ready report (see format_report)."""
    import tensorflow_data_validation as tfdv
    from modules import features

    if span is None:
        span = capture_mod.latest_span(capture_root)
        if span is None:
            raise CaptureError('no span-N folders in %s: capture some traffic with '
                               '`tfx-canary serve --capture-rate 0.1`' % capture_root)
    files = capture_mod.part_files(capture_root, span)
    if not files:
        raise CaptureError('%s holds no part-*.csv files' % capture_mod.span_dir(capture_root,
                                                                                 span))
    schema_path = find_schema(workspace, schema_path)
    stats_path = find_stats(workspace, stats_path)
    schema = load_schema(schema_path)
    training = load_stats(stats_path)
    if served_columns is None:
        served_columns = set(features.RAW_FEATURE_KEYS) | {'trip_start_timestamp'}
    checked_schema, excluded = serving_schema(schema, set(served_columns))
    current, rows = statistics_for(files, schema)

    previous_files = []
    earlier = [s for s in _spans(capture_root) if s < span]
    if earlier:
        previous_files = capture_mod.part_files(capture_root, earlier[-1])
    if previous_files:
        previous, _ = statistics_for(previous_files, schema)
        previous_name = 'capture span %d' % earlier[-1]
    else:
        previous, previous_name = training, 'training statistics (no earlier capture span)'

    # Schema + drift, with the capture as the current span.
    checked = tfdv.validate_statistics(current, checked_schema, environment=SERVING,
                                       previous_statistics=previous)
    # Skew: training statistics vs. the capture as serving statistics. Only
    # the skew verdicts are taken from this call: the training data itself
    # was validated by the pipeline.
    skewed = tfdv.validate_statistics(training, checked_schema, environment=SERVING,
                                      serving_statistics=current)
    comparators = _comparators(checked_schema)
    skew_values = _measurements(skewed, 'skew')
    drift_values = _measurements(checked, 'drift')
    flagged_skew = {a['feature'] for a in _anomaly_list(
        skewed, lambda r: _is_comparator(r, 'serving'))}
    flagged_drift = {a['feature'] for a in _anomaly_list(
        checked, lambda r: _is_comparator(r, 'previous'))}

    def rows_for(which, values, flagged):
        out = []
        for name in sorted(comparators):
            if which not in comparators[name]:
                continue
            kind, threshold = comparators[name][which]
            value = values.get(name)
            out.append({'feature': name, 'measure': _KIND_NAMES[kind], 'value': value,
                        'threshold': threshold,
                        'anomaly': name in flagged or (value is not None and value > threshold)})
        return out

    schema_anomalies = _anomaly_list(
        checked, lambda r: not (_is_comparator(r, 'previous') or _is_comparator(r, 'serving')))
    report = {
        'capture': capture_mod.span_dir(capture_root, span), 'span': span,
        'files': files, 'rows': rows, 'schema': schema_path, 'environment': SERVING,
        'training_statistics': stats_path,
        'training_examples': training.datasets[0].num_examples if training.datasets else None,
        'not_served': excluded, 'drift_baseline': previous_name,
        'skew': rows_for('skew', skew_values, flagged_skew),
        'drift': rows_for('drift', drift_values, flagged_drift),
        'schema_anomalies': schema_anomalies,
    }
    report['ok'] = not (schema_anomalies or any(r['anomaly'] for r in report['skew'])
                        or any(r['anomaly'] for r in report['drift']))
    return report


def _spans(root):
    import re
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in (re.match(r'^span-(\d+)$', n) for n in names) if m)


def format_report(report):
    lines = [
        'capture   %s  (%d part%s, %d rows)' % (
            report['capture'], len(report['files']),
            '' if len(report['files']) == 1 else 's', report['rows']),
        'schema    %s  (environment %s)' % (report['schema'], report['environment']),
        'training  %s  (%s examples)' % (report['training_statistics'],
                                         report['training_examples']),
    ]
    if report['not_served']:
        lines.append('not in the serving signature, not checked: %s'
                     % ', '.join(report['not_served']))

    def table(title, entries):
        lines.append(title)
        if not entries:
            lines.append('  (no comparators in the schema)')
        width = max([len(e['feature']) for e in entries] + [7])
        for e in entries:
            value = 'n/a' if e['value'] is None else '%.3f' % e['value']
            lines.append('  %s  %-14s %6s  (threshold %.2f)  %s'
                         % (e['feature'].ljust(width), e['measure'], value, e['threshold'],
                            'SKEWED' if e['anomaly'] and title.startswith('skew') else
                            'DRIFTED' if e['anomaly'] else 'ok'))

    table('skew (training vs. capture):', report['skew'])
    table('drift (capture vs. %s):' % report['drift_baseline'], report['drift'])
    if report['schema_anomalies']:
        lines.append('schema anomalies (SERVING environment):')
        for a in report['schema_anomalies']:
            lines.append('  %s: %s (%s)' % (a['feature'], a['short'], a['description']))
    else:
        lines.append('schema anomalies (SERVING environment): none')
    lines.append('result    %s' % ('OK' if report['ok'] else
                                   'ANOMALIES FOUND: review before training on this span'))
    return '\n'.join(lines)
