"""`tfx-canary capture validate`: TFDV on captured serving data.

Three checks, all TFDV's own, against the training statistics and schema:

* the capture against the schema in the SERVING environment (the label is
  not expected there);
* training/serving skew: the schema's skew_comparators, for each version
  that served captured rows, the statistics of the data *that version* was
  trained on (staged beside it, rollout.training_data) vs. the rows it
  served;
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
from common.errors import TfxCanaryError
from rollout import training_data
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


def read_csv(paths, counts=None):
    """(header, rows) of CSV files sharing one header; `counts` (a list), if
    given, gets each file's number of rows."""
    header, rows = None, []
    for path in paths:
        before = len(rows)
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.reader(f)
            this = next(reader, None)
            if this is None:
                if counts is not None:
                    counts.append(0)
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
        if counts is not None:
            counts.append(len(rows) - before)
    if header is None or not rows:
        raise CaptureError('no captured rows in %s' % ', '.join(paths))
    return header, rows


def statistics_for(paths, schema, only=None, table=None):
    """TFDV statistics of CSV files, decoded as CsvExampleGen would
    (`only`: the indices of the rows to take, default all; `table`: their
    (header, rows) when already read)."""
    from tensorflow_data_validation.statistics import stats_impl
    import tensorflow_data_validation as tfdv
    from tensorflow.core.example import example_pb2
    from tfx_bsl.coders import example_coder

    header, rows = table or read_csv(paths)
    if only is not None:
        rows = [rows[i] for i in sorted(only)]
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


@dataclasses.dataclass(frozen=True)
class TrainingSource:
    """The training statistics some captured rows are compared with."""
    version: object           # the version that served the rows; None = not known / all rows
    stats_path: str
    description: str
    rows: tuple               # indices of those rows in the capture span


def _served_versions(files, counts):
    """The serving version of each captured row (None where its meta is missing);
    `counts`: each file's number of rows (read_csv)."""
    versions = []
    for path, rows in zip(files, counts):
        try:
            meta = capture_mod.read_meta(path)
        except FileNotFoundError:
            meta = []
        versions += [m.get('version') for m in meta[:rows]] + [None] * max(0, rows - len(meta))
    return versions


def training_sources(files, counts, workspace, stats_path=None, serving_root=None,
                     model_name=None):
    """Which training statistics each captured row is compared with.

    --stats: those, for every row. Otherwise each serving version's own
    staged training statistics; the workspace's newest StatisticsGen output
    for rows of a version staged without them (or of no known version).
    """
    versions = _served_versions(files, counts)
    if stats_path:
        return [TrainingSource(None, find_stats(workspace, stats_path), '--stats',
                               tuple(range(len(versions))))]
    sources = []
    fallback = None
    for version in sorted({v for v in versions if v is not None}) + [None]:
        rows = tuple(i for i, v in enumerate(versions) if v == version)
        if not rows:
            continue
        staged = (training_data.read(serving_root, model_name, version)
                  if serving_root and model_name and version is not None else None)
        if staged is not None and 'train' in staged.splits:
            sources.append(TrainingSource(version, staged.statistics_file('train'),
                                          'the data v%d was trained on (%s)'
                                          % (version, staged.span), rows))
            continue
        fallback = fallback or find_stats(workspace)
        why = ('v%d has no staged training data' % version if version is not None
               else 'rows without a serving version')
        sources.append(TrainingSource(version, fallback,
                                      "the workspace's newest training statistics (%s)" % why,
                                      rows))
    return sources


def _schema_path(workspace, schema_path, sources, serving_root, model_name):
    """--schema; else the schema staged with the version that served most rows; else the workspace's."""
    if schema_path or not (serving_root and model_name):
        return find_schema(workspace, schema_path)
    for source in sorted(sources, key=lambda s: -len(s.rows)):
        staged = (training_data.read(serving_root, model_name, source.version)
                  if source.version is not None else None)
        if staged is not None and staged.schema_file:
            return staged.schema_file
    return find_schema(workspace)


def _capture_files(capture_root, span):
    span, files = capture_mod.span_parts(capture_root, span)
    if span is None:
        raise CaptureError('no span-N folders in %s: capture some traffic with '
                           '`tfx-canary serve --capture-rate 0.1`' % capture_root)
    if not files:
        raise CaptureError('%s holds no part-*.csv files' % capture_mod.span_dir(capture_root,
                                                                                 span))
    return span, files


def _previous(capture_root, span, schema, training):
    """(statistics, name) the capture's drift is measured against."""
    earlier = [s for s in _spans(capture_root) if s < span]
    previous_files = capture_mod.part_files(capture_root, earlier[-1]) if earlier else []
    if previous_files:
        return statistics_for(previous_files, schema)[0], 'capture span %d' % earlier[-1]
    return training, 'training statistics (no earlier capture span)'


def _skew_rows(source, table, schema, checked_schema, comparators):
    """The skew table of one training source against the rows it served."""
    import tensorflow_data_validation as tfdv
    training = load_stats(source.stats_path)
    served, _ = statistics_for(None, schema, only=source.rows, table=table)
    # Only the skew verdicts are taken from this call: the training data
    # itself was validated by the pipeline.
    skewed = tfdv.validate_statistics(training, checked_schema, environment=SERVING,
                                      serving_statistics=served)
    flagged = {a['feature'] for a in _anomaly_list(
        skewed, lambda r: _is_comparator(r, 'serving'))}
    rows = _table(comparators, 'skew', _measurements(skewed, 'skew'), flagged)
    for row in rows:
        row.update(version=source.version, rows=len(source.rows))
    return rows


def _table(comparators, which, values, flagged):
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


def validate(capture_root, span=None, workspace=DEFAULT_WORKSPACE, schema_path=None,
             stats_path=None, served_columns=(), serving_root=None, model_name=None):
    """Runs the three checks; returns a JSON-ready report (see format_report).

    `served_columns`: the columns the serving signature carries (the caller
    knows the model; others are taken out of the SERVING environment).
    `serving_root`/`model_name`: where each version's training data is staged.
    """
    import tensorflow_data_validation as tfdv

    span, files = _capture_files(capture_root, span)
    counts = []
    table = read_csv(files, counts)   # Read once: every check below takes its rows from it.
    sources = training_sources(files, counts, workspace, stats_path, serving_root, model_name)
    schema_path = _schema_path(workspace, schema_path, sources, serving_root, model_name)
    schema = load_schema(schema_path)
    primary = max(sources, key=lambda s: len(s.rows))
    training = load_stats(primary.stats_path)
    checked_schema, excluded = serving_schema(schema, set(served_columns))
    comparators = _comparators(checked_schema)
    current, rows = statistics_for(files, schema, table=table)
    previous, previous_name = _previous(capture_root, span, schema, training)

    # Schema + drift, with the capture as the current span.
    checked = tfdv.validate_statistics(current, checked_schema, environment=SERVING,
                                       previous_statistics=previous)
    flagged_drift = {a['feature'] for a in _anomaly_list(
        checked, lambda r: _is_comparator(r, 'previous'))}
    schema_anomalies = _anomaly_list(
        checked, lambda r: not (_is_comparator(r, 'previous') or _is_comparator(r, 'serving')))
    skew = [row for source in sources
            for row in _skew_rows(source, table, schema, checked_schema, comparators)]
    report = {
        'capture': capture_mod.span_dir(capture_root, span), 'span': span,
        'files': files, 'rows': rows, 'schema': schema_path, 'environment': SERVING,
        'training_statistics': primary.stats_path,
        'training_examples': training.datasets[0].num_examples if training.datasets else None,
        'training_sources': [{'version': s.version, 'statistics': s.stats_path,
                              'description': s.description, 'rows': len(s.rows)}
                             for s in sources],
        'not_served': excluded, 'drift_baseline': previous_name,
        'skew': skew,
        'drift': _table(comparators, 'drift', _measurements(checked, 'drift'), flagged_drift),
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

    sources = report.get('training_sources') or []
    if len(sources) == 1 and sources[0]['version'] is None:
        table('skew (training vs. capture):', report['skew'])
    for source in (sources if not (len(sources) == 1 and sources[0]['version'] is None) else []):
        lines.append('v%s served %d rows; its training statistics: %s'
                     % (source['version'], source['rows'], source['statistics']))
        table('skew (%s vs. the rows v%s served):' % (source['description'], source['version']),
              [r for r in report['skew'] if r['version'] == source['version']])
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
