"""`capture export`: labeled captured rows as a training span the pipeline reads (no server)."""
import json
import os
import shutil

import pytest

from pipeline import spans
from serving import capture, export, labels
from tests.conftest import DATA_ROOT, SCHEMA_PATH, one_error_line, run_cli_quietly

SPEC = labels.label_spec_from_schema(SCHEMA_PATH)
HEADER = capture.header_from_schema(SCHEMA_PATH)
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def _capture(capture_dir, rows, rate=0.25, span=1, max_rows=10000):
    """Writes `rows` [(request id, row, version, role)] as `serve` would, published."""
    sink = capture.CsvFileSink(str(capture_dir), span, HEADER, max_rows=max_rows)
    sink.write([capture.CaptureRecord(
        {'fare': 5.0 + i, 'company': 'Cab %d' % i, 'trip_start_hour': 7}, rid, row,
        T0 + 60 * i, 'taxi', version, role, 0.5, rate)
        for i, (rid, row, version, role) in enumerate(rows)])
    sink.close()


def _label(capture_dir, items):
    log = labels.LabelLog(str(capture_dir), SPEC, labels.CapturedIndex().load(str(capture_dir)))
    return log.append([labels.Label(*item) for item in items], 'test')


def _rows(result):
    return capture.read_parts([os.path.join(result.directory, export.DATA_FILE)])


ROWS = [('a', 0, 1, 'stable'), ('a', 1, 1, 'stable'), ('b', 0, 2, 'canary'),
        ('c', 0, 1, 'stable'), ('d', 0, 2, 'canary')]


def test_only_labeled_rows_with_exactly_the_labels_sent(tmp_path):
    capture_dir = tmp_path / 'capture'
    _capture(capture_dir, ROWS, max_rows=2)  # three parts
    _label(capture_dir, [('a', 1, 0.1), ('b', 0, 12.25), ('d', 0, 0.0), ('d', 0, 7.0),
                         ('zz', 0, 1.0)])
    result = export.export(str(capture_dir), None, str(tmp_path / 'data'), SPEC)
    assert result.span == 1 and result.directory == str(tmp_path / 'data' / 'span-1')
    rows = _rows(result)
    assert list(rows[0]) == HEADER
    assert [(r['company'], r['tips']) for r in rows] == [
        ('Cab 1', '0.1'), ('Cab 2', '12.25'), ('Cab 4', '0.0')]  # d: the first label wins
    assert result.counts == export.Counts(captured=5, labeled=3, unlabeled=2, rejected=0,
                                          labels_pending=0, labels_unknown=1,
                                          labels_duplicate=1)
    with open(os.path.join(result.directory, export.MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest == result.manifest
    assert manifest['source'] == export.SOURCE and manifest['span'] == 1
    assert manifest['rows'] == {'captured': 5, 'labeled': 3, 'unlabeled': 2, 'rejected': 0}
    assert manifest['labels'] == {'pending': 0, 'unknown': 1, 'duplicate': 1}
    assert manifest['served_by'] == [
        {'model': 'taxi', 'version': 1, 'role': 'stable', 'rows': 1},
        {'model': 'taxi', 'version': 2, 'role': 'canary', 'rows': 2}]
    assert manifest['time_range'] == {'first_served_at': '2026-01-01T00:01:00+00:00',
                                      'last_served_at': '2026-01-01T00:04:00+00:00'}
    assert manifest['capture_rate'] == 0.25 and manifest['label_column'] == 'tips'
    assert len(manifest['parts']) == 3


def test_the_exported_span_reads_like_the_bundled_ones(tmp_path):
    data_root = tmp_path / 'data'
    shutil.copytree(DATA_ROOT, data_root)
    capture_dir = tmp_path / 'capture'
    _capture(capture_dir, ROWS)
    _label(capture_dir, [('a', 0, 2.5)])
    result = export.export(str(capture_dir), 1, str(data_root), SPEC)
    assert result.span == 4  # the next free number after the bundled 1-3
    # The pipeline's pre-flight checks: the span's CSV, and one header for 1-4.
    assert spans.check_span(str(data_root), 'span-{SPAN}/*.csv', 4)[1] == [
        os.path.join(result.directory, export.DATA_FILE)]
    assert len(spans.check_span_range(str(data_root), 'span-{SPAN}/*.csv', 1, 4)) == 4


def test_a_data_root_with_other_columns_is_refused(tmp_path):
    data_root = tmp_path / 'data'
    (data_root / 'span-1').mkdir(parents=True)
    (data_root / 'span-1' / 'data.csv').write_text('fare,tips\n1.0,0.5\n')
    capture_dir = tmp_path / 'capture'
    _capture(capture_dir, ROWS)
    _label(capture_dir, [('a', 0, 2.5)])
    with pytest.raises(export.ExportError, match='another header than .*span-1/data.csv'):
        export.export(str(capture_dir), 1, str(data_root), SPEC)
    assert sorted(os.listdir(data_root)) == ['.export.lock', 'span-1']


def test_an_existing_span_is_never_replaced(tmp_path):
    capture_dir = tmp_path / 'capture'
    _capture(capture_dir, ROWS)
    _label(capture_dir, [('a', 0, 2.5)])
    first = export.export(str(capture_dir), 1, str(tmp_path / 'data'), SPEC)
    before = open(os.path.join(first.directory, export.DATA_FILE)).read()
    with pytest.raises(export.ExportError, match='span-1 already exists'):
        export.export(str(capture_dir), 1, str(tmp_path / 'data'), SPEC, span=1)
    assert open(os.path.join(first.directory, export.DATA_FILE)).read() == before
    assert export.export(str(capture_dir), 1, str(tmp_path / 'data'), SPEC).span == 2


def test_a_failed_export_leaves_no_span_and_a_killed_ones_temp_is_cleaned(tmp_path,
                                                                         monkeypatch):
    capture_dir = tmp_path / 'capture'
    data_root = tmp_path / 'data'
    _capture(capture_dir, ROWS)
    _label(capture_dir, [('a', 0, 2.5)])
    written = []

    def fail_on_manifest(path, text):
        if path.endswith(export.MANIFEST):
            raise OSError(28, 'No space left on device')
        written.append(path)
        with open(path, 'w') as f:
            f.write(text)
    monkeypatch.setattr(export, '_write_durable', fail_on_manifest)
    with pytest.raises(OSError):
        export.export(str(capture_dir), 1, str(data_root), SPEC)
    assert written and os.listdir(data_root) == ['.export.lock']  # data.csv was written
    monkeypatch.undo()
    # A temp folder left by an export killed mid-write is cleaned by the next one.
    os.mkdir(data_root / '.span-1.export-99999.tmp')
    result = export.export(str(capture_dir), 1, str(data_root), SPEC)
    assert sorted(os.listdir(data_root)) == ['.export.lock', 'span-1']
    assert sorted(os.listdir(result.directory)) == [export.MANIFEST, export.DATA_FILE]


def test_labels_that_no_longer_fit_the_schema_are_rejected_and_rates_recorded(tmp_path):
    capture_dir = tmp_path / 'capture'
    _capture(capture_dir, ROWS[:2], rate=0.1)
    _capture(capture_dir, ROWS[2:], rate=0.5)  # serve restarted at another rate
    _label(capture_dir, [('a', 0, 1.0), ('b', 0, 50.0), ('c', 0, 3.0)])
    stricter = labels.LabelSpec('tips', 'FLOAT', 0.0, 20.0)
    result = export.export(str(capture_dir), 1, str(tmp_path / 'data'), stricter)
    assert [r['tips'] for r in _rows(result)] == ['1.0', '3.0']
    assert result.manifest['rows'] == {'captured': 5, 'labeled': 2, 'unlabeled': 2,
                                       'rejected': 1}
    # Mixed rates: no single rate to re-weight by, both listed.
    assert result.manifest['capture_rate'] is None
    assert result.manifest['capture_rates'] == [0.1, 0.5]


def test_export_command_prints_the_span_or_one_error_line(tmp_path, capsys):
    capture_dir = tmp_path / 'capture'
    data_root = tmp_path / 'data'
    _capture(capture_dir, ROWS)
    argv = ['capture', 'export', '--capture-dir', str(capture_dir), '--data-root',
            str(data_root)]
    code, out = run_cli_quietly(argv)
    line = one_error_line(code, out, capsys.readouterr().err)
    assert 'has no labeled rows (5 captured' in line and 'nothing written' in line
    assert not os.path.exists(data_root / 'span-1')
    _label(capture_dir, [('c', 0, 4.0)])
    code, out = run_cli_quietly(argv)
    assert code == 0
    assert 'exported 1 labeled rows as %s' % (data_root / 'span-1') in out
    assert 'tfx-canary run --data-root %s --span 1' % data_root in out


# ---------------------------------------------------------------- the trained taxi model

@pytest.mark.e2e
def test_served_rows_and_their_tips_come_back_as_the_next_span(module_workspace, schema,
                                                               tmp_path):
    """Span-2 trips served by the pipeline's model, tipped later, exported as span 4."""
    import csv

    import httpx
    from tensorflow_metadata.proto.v0 import schema_pb2

    from modules import features
    from serving import client
    from tests.serving.conftest import predict_body, running
    source = os.path.join(DATA_ROOT, 'span-2', 'data.csv')
    with open(source, newline='') as f:
        trips = [r for r in csv.DictReader(f)
                 if all(r[k] != '' for k in features.RAW_FEATURE_KEYS)][:30]
    instances = client.instances_from_csv(source, schema, features.RAW_FEATURE_KEYS, limit=30)
    capture_dir = tmp_path / 'capture'
    sink = capture.CsvFileSink(str(capture_dir), 1, HEADER)
    writer = capture.CaptureWriter(sink, 1.0, timestamp_column='trip_start_timestamp')
    log = labels.LabelLog(str(capture_dir), SPEC, labels.CapturedIndex())
    with running(module_workspace / 'serving', capture=writer, feedback=log) as background:
        with httpx.Client(base_url=background.url, timeout=60) as http:
            for batch in range(3):
                answer = http.post('/v1/models/taxi:predict',
                                   json=predict_body(instances[10 * batch:10 * batch + 10]),
                                   headers={'X-Request-Id': 'trips-%d' % batch})
                assert answer.status_code == 200, answer.text
            tips = [{'request_id': 'trips-%d' % (i // 10), 'row': i % 10,
                     'tips': float(trip['tips'])} for i, trip in enumerate(trips)]
            assert http.post('/v1/models/taxi:feedback', json={'labels': tips}).json() == {
                'accepted': 30, 'unknown': 0, 'duplicate': 0}
    data_root = tmp_path / 'data'
    shutil.copytree(DATA_ROOT, data_root)
    result = export.export(str(capture_dir), None, str(data_root), SPEC)
    assert result.span == 4 and result.counts.labeled == 30
    exported = _rows(result)
    kinds = {f.name: f.type for f in schema.feature}
    for trip, row in zip(trips, exported):
        for key in features.RAW_FEATURE_KEYS:
            if kinds[key] == schema_pb2.FLOAT:  # float32 on the way through the model
                assert float(row[key]) == pytest.approx(float(trip[key]), rel=1e-6), key
            else:
                assert row[key] == trip[key], key
        assert float(row['tips']) == float(trip['tips'])
    assert {(s['version'], s['role']) for s in result.manifest['served_by']} <= {
        (1, 'stable'), (2, 'canary')}
    assert len(spans.check_span_range(str(data_root), 'span-{SPAN}/*.csv', 1, 4)) == 4
