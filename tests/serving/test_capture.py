"""Capture sink durability and TFDV validation of captured spans (no server, no pipeline)."""
import csv
import json
import os

import numpy as np
import pytest

from pipeline import spans
from serving import capture, codec, validate
from tests.conftest import DATA_ROOT, SCHEMA_PATH, run_cli_quietly

HEADER = capture.header_from_schema(SCHEMA_PATH)


def _span2_rows(limit=None):
    with open(os.path.join(DATA_ROOT, 'span-2', 'data.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit else rows


def _record(features, i=0, version=1):
    return capture.CaptureRecord(features, 'req-%d' % i, 0, 1.7e9 + i, 'taxi', version,
                                 'stable', 0.25)


def test_header_is_the_training_csv_header():
    with open(os.path.join(DATA_ROOT, 'span-1', 'data.csv')) as f:
        assert next(csv.reader(f)) == HEADER


def test_parts_are_published_atomically_and_read_as_a_span(tmp_path):
    sink = capture.CsvFileSink(tmp_path, 4, HEADER, max_rows=3)
    sink.write([_record({'fare': np.float32(41.88), 'company': b'Flash Cab',
                         'trip_start_hour': np.int64(18)}, i) for i in range(4)])
    # Three rows rotated a part; the fourth sits in a hidden temp file.
    assert len(capture.part_files(tmp_path, 4)) == 1
    assert any(n.startswith('.part-') for n in os.listdir(tmp_path / 'span-4'))
    sink.close()
    parts = capture.part_files(tmp_path, 4)
    assert len(parts) == 2
    assert not any(n.startswith('.') for n in os.listdir(tmp_path / 'span-4'))
    rows = capture.read_parts(parts)
    assert len(rows) == 4 and list(rows[0]) == HEADER
    assert (rows[0]['fare'], rows[0]['company'], rows[0]['trip_start_hour'], rows[0]['tips']) \
        == ('41.88', 'Flash Cab', '18', '')
    meta = capture.read_meta(parts[0])
    assert [m['request_id'] for m in meta] == ['req-0', 'req-1', 'req-2']
    assert meta[0]['version'] == 1 and meta[0]['prediction'] == 0.25
    # The capture root reads like any data root: the pipeline's span checks pass.
    span, files = spans.check_span(str(tmp_path), 'span-{SPAN}/*.csv')
    assert span == 4 and files == parts


def test_a_crashed_writer_leaves_a_part_the_next_start_publishes(tmp_path):
    directory = tmp_path / 'span-1'
    directory.mkdir()
    name = 'part-20260101T000000Z-123-00000'
    (directory / ('.%s.csv.tmp' % name)).write_text(','.join(HEADER) + '\n1,2.5\n3,4.5\n5,6.')
    (directory / ('.%s.meta.jsonl.tmp' % name)).write_text('{"row": 0}\n{"row": 1}\n{"ro')
    empty = 'part-20260101T000000Z-123-00001'
    (directory / ('.%s.csv.tmp' % empty)).write_text(','.join(HEADER) + '\n')
    sink = capture.CsvFileSink(tmp_path, 1, HEADER)
    assert [os.path.basename(p) for p in sink.recovered] == [name + '.csv']
    # The torn last line is cut; the header-only part is gone.
    assert (directory / (name + '.csv')).read_text().splitlines()[1:] == ['1,2.5', '3,4.5']
    assert len(capture.read_meta(str(directory / (name + '.csv')))) == 2
    assert sorted(os.listdir(directory)) == [name + '.csv', name + '.meta.jsonl']


def test_writer_samples_fills_the_timestamp_and_never_blocks(tmp_path):
    sink = capture.CsvFileSink(tmp_path, 2, HEADER)
    specs = {'fare': codec.InputSpec('fare', 'DT_FLOAT', (None,)),
             'company': codec.InputSpec('company', 'DT_STRING', (None,))}
    arrays = {'fare': np.array([7.5, 8.25], np.float32),
              'company': np.array([b'a', b'b'], dtype=object)}
    writer = capture.CaptureWriter(sink, rate=0.5, timestamp_column='trip_start_timestamp',
                                   seed=3, queue_size=1000)
    sampled = 0
    for _ in range(400):
        if writer.sampled():
            sampled += 1
            writer.submit(capture.CaptureBatch(capture.feature_rows(arrays, specs), 'r',
                                               1_700_000_123.9, 'taxi', 2, 'canary',
                                               [0.1, 0.9]))
    writer.close()
    assert 150 < sampled < 250
    rows = capture.read_parts(capture.part_files(tmp_path, 2))
    assert len(rows) == 2 * sampled and writer.rows_written == 2 * sampled
    assert {r['trip_start_timestamp'] for r in rows} == {'1700000123'}
    assert [r['fare'] for r in rows[:2]] == ['7.5', '8.25']
    # A full queue drops (and counts) instead of blocking the request.
    stuck = capture.CaptureWriter(capture.CsvFileSink(tmp_path, 3, HEADER), rate=1.0,
                                  queue_size=1)
    stuck.close()  # its thread is gone: nothing drains the queue any more
    assert stuck.submit('first') is True
    assert stuck.submit('second') is False and stuck.dropped == 1


@pytest.fixture(scope='module')
def training_stats(tmp_path_factory, schema):
    """Statistics of span 2, standing in for the pipeline's StatisticsGen output."""
    from tensorflow_data_validation import write_stats_text
    stats, _ = validate.statistics_for([os.path.join(DATA_ROOT, 'span-2', 'data.csv')], schema)
    path = tmp_path_factory.mktemp('stats') / 'stats.pbtxt'
    write_stats_text(stats, str(path))
    return str(path)


def _served_columns():
    from serving import cli as serving_cli
    return serving_cli._served_columns()


SERVED = _served_columns()


def _write_capture(root, span, rows, versions=None):
    sink = capture.CsvFileSink(root, span, HEADER)
    # What serving captures: the model's features, no label, no census tracts.
    sink.write([_record({k: v for k, v in row.items()
                         if k not in ('tips', 'pickup_census_tract', 'dropoff_census_tract')}, i,
                        version=versions[i] if versions else 1)
                for i, row in enumerate(rows)])
    sink.close()


def test_validate_passes_serving_like_training_and_flags_crafted_skew(tmp_path, training_stats):
    # Capturing exactly the training rows must show no skew at all: proof that
    # captured CSV is decoded the way CsvExampleGen decodes the training CSV.
    rows = _span2_rows()
    _write_capture(tmp_path, 1, rows)
    report = validate.validate(str(tmp_path), None, str(tmp_path), SCHEMA_PATH, training_stats,
                               served_columns=SERVED)
    assert report['ok'], validate.format_report(report)
    assert report['rows'] == len(rows)
    assert all(r['value'] < 1e-6 for r in report['skew']), validate.format_report(report)
    assert {r['feature'] for r in report['skew']} == {
        'company', 'fare', 'payment_type', 'trip_miles', 'trip_start_hour'}
    assert set(report['not_served']) == {'pickup_census_tract', 'dropoff_census_tract'}

    # Span 2: every rider pays cash and fares are ten times higher.
    skewed = [dict(r, payment_type='Cash', fare=str(float(r['fare'] or 0) * 10 + 50))
              for r in rows[::2]]
    _write_capture(tmp_path, 2, skewed)
    code, out = run_cli_quietly(['capture', 'validate', '--capture-dir', str(tmp_path),
                                 '--schema', SCHEMA_PATH, '--stats', training_stats])
    assert code == 1, out
    skew_section, drift_section = out.split('skew (training vs. capture):')[1].split('drift (')
    lines = {line.split()[0]: line for line in skew_section.splitlines() if line.strip()}
    assert 'SKEWED' in lines['payment_type'] and 'SKEWED' in lines['fare']
    assert lines['trip_start_hour'].endswith('ok')
    assert drift_section.startswith('capture vs. capture span 1)')
    assert 'DRIFTED' in drift_section
    assert 'ANOMALIES FOUND' in out

    code, out = run_cli_quietly(['capture', 'validate', '--capture-dir', str(tmp_path),
                                 '--span', '2', '--schema', SCHEMA_PATH, '--stats',
                                 training_stats, '--json'])
    report = json.loads(out)
    assert code == 1 and not report['ok']
    fare = next(r for r in report['skew'] if r['feature'] == 'fare')
    assert fare['anomaly'] and fare['value'] > fare['threshold']


def test_validate_reports_schema_anomalies_in_the_serving_environment(tmp_path, training_stats):
    rows = [dict(r, payment_type='Bitcoin') for r in _span2_rows(300)]
    _write_capture(tmp_path, 1, rows)
    report = validate.validate(str(tmp_path), 1, str(tmp_path), SCHEMA_PATH, training_stats,
                               served_columns=SERVED)
    assert not report['ok']
    assert [a['feature'] for a in report['schema_anomalies']] == ['payment_type']
    # The label is not expected at serving time: no anomaly for `tips`.
    assert 'tips' not in {a['feature'] for a in report['schema_anomalies']}


def test_validate_errors_are_one_line(tmp_path, capsys):
    from runners import cli
    code = cli.main(['capture', 'validate', '--capture-dir', str(tmp_path / 'none'),
                     '--workspace', str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: no span-N folders in') and err.count('\n') == 1


def _span_rows(span, limit=None):
    with open(os.path.join(DATA_ROOT, 'span-%d' % span, 'data.csv')) as f:
        return list(csv.DictReader(f))[:limit]


def _write_rows(path, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)


def _stage_training_data(serving_root, version, span_rows, schema, span_words):
    """What CanaryPusher stages beside a version: its training statistics and schema."""
    from rollout import training_data
    stats, _ = validate.statistics_for([span_rows], schema)
    folder = os.path.join(os.path.dirname(span_rows), 'stats-v%d' % version, 'Split-train')
    os.makedirs(folder)
    with open(os.path.join(folder, 'FeatureStats.pb'), 'wb') as f:
        f.write(stats.SerializeToString())
    training_data.write(serving_root, 'taxi', version, training_data.TrainingData(
        statistics_dir=os.path.dirname(folder), schema_file=SCHEMA_PATH, span=span_words))


def test_each_version_is_compared_with_the_data_it_was_trained_on(tmp_path, schema):
    """v1 learned from span 1, v2 from a span where fares are in cents. Each
    serves rows like its own training data: no skew for either, which a single
    workspace-wide training statistics could not say."""
    serving = str(tmp_path / 'serving')
    cents = tmp_path / 'cents.csv'
    rows2 = [dict(r, fare=str(float(r['fare'] or 0) * 100)) for r in _span_rows(2)]
    _write_rows(cents, rows2)
    plain = tmp_path / 'span1.csv'
    rows1 = _span_rows(1)
    _write_rows(plain, rows1)
    _stage_training_data(serving, 1, str(plain), schema, 'span 1')
    _stage_training_data(serving, 2, str(cents), schema, 'span 2')
    captured = rows1[:1500] + rows2[:1500]
    _write_capture(tmp_path / 'capture', 1, captured, versions=[1] * 1500 + [2] * 1500)
    report = validate.validate(str(tmp_path / 'capture'), 1, str(tmp_path / 'ws'),
                               served_columns=SERVED, serving_root=serving, model_name='taxi')
    by_version = {s['version']: s for s in report['training_sources']}
    assert sorted(by_version) == [1, 2]
    assert by_version[2]['rows'] == 1500 and 'training-data/2/' in by_version[2]['statistics']
    assert by_version[2]['description'] == 'the data v2 was trained on (span 2)'
    fare = {r['version']: r for r in report['skew'] if r['feature'] == 'fare'}
    assert not fare[1]['anomaly'] and not fare[2]['anomaly'], validate.format_report(report)
    assert report['schema'].endswith(os.path.join('training-data', '1', 'schema.pbtxt'))

    # Swap who served what: each version now sees the other's fares.
    _write_capture(tmp_path / 'capture', 2, captured, versions=[2] * 1500 + [1] * 1500)
    code, out = run_cli_quietly(['capture', 'validate', '--capture-dir', str(tmp_path / 'capture'),
                                 '--workspace', str(tmp_path / 'ws'), '--serving-root', serving])
    assert code == 1, out
    assert 'skew (the data v1 was trained on (span 1) vs. the rows v1 served):' in out
    v1, v2 = out.split('vs. the rows v1 served):')[1].split('vs. the rows v2 served):')
    assert [l for l in v1.splitlines() if l.strip().startswith('fare')][0].endswith('SKEWED')
    assert [l for l in v2.splitlines() if l.strip().startswith('fare')][0].endswith('SKEWED')


def test_a_version_staged_without_training_data_falls_back_and_says_so(tmp_path, schema):
    from serving.validate import CaptureError
    _write_capture(tmp_path / 'capture', 1, _span2_rows(300), versions=[7] * 300)
    args = dict(served_columns=SERVED, serving_root=str(tmp_path / 'serving'), model_name='taxi')
    # Neither staged data nor workspace outputs: the error says where it looked.
    with pytest.raises(CaptureError, match='no training statistics found in .*StatisticsGen'):
        validate.validate(str(tmp_path / 'capture'), 1, str(tmp_path / 'ws'), SCHEMA_PATH, **args)
    stats, _ = validate.statistics_for([os.path.join(DATA_ROOT, 'span-2', 'data.csv')], schema)
    split = tmp_path / 'ws' / 'pipeline' / 'StatisticsGen' / 'statistics' / '5' / 'Split-train'
    os.makedirs(split)
    (split / 'FeatureStats.pb').write_bytes(stats.SerializeToString())
    report = validate.validate(str(tmp_path / 'capture'), 1, str(tmp_path / 'ws'), SCHEMA_PATH,
                               **args)
    [source] = report['training_sources']
    assert source['version'] == 7 and source['statistics'] == str(split / 'FeatureStats.pb')
    assert source['description'] == ("the workspace's newest training statistics "
                                     "(v7 has no staged training data)")
    assert report['ok'], validate.format_report(report)
