"""serving/replay.py: a CSV span replayed as production traffic, its labels delivered later.

A real ModelServer on loopback with the tiny two-version model (no pipeline
run): requests carry the replay's ids, the capture keeps them, the feedback
API takes the labels, and the export holds exactly the CSV's label values.
"""
import contextlib
import os

import pytest

from serving import capture, export, labels, replay
from tests.conftest import SCHEMA_PATH, write_csv
from tests.serving import tiny_serving
from tests.serving.conftest import running

SPEC = labels.label_spec_from_schema(SCHEMA_PATH)
HEADER = capture.header_from_schema(SCHEMA_PATH)
KEYS = ('fare', 'company')    # what the tiny model serves


@pytest.fixture(scope='module')
def serving_root(tmp_path_factory):
    return tiny_serving.stage_two_versions(tmp_path_factory.mktemp('tiny-replay'))


@pytest.fixture
def span_csv(tmp_path):
    """A training CSV: 7 rows, one without a fare (cannot be served), one without tips."""
    rows = [(5.5 + i, 'Cab %d' % i, '%.2f' % (0.25 * i), 41.9) for i in range(7)]
    rows[2] = ('', 'Cab 2', '1.00', 41.9)
    rows[5] = (10.5, 'Cab 5', '', 41.9)
    path = tmp_path / 'span-2' / 'data.csv'
    write_csv(str(path), ['fare', 'company', 'tips', 'pickup_latitude'], rows)
    return str(path)


@contextlib.contextmanager
def capturing(serving_root, capture_dir):
    sink = capture.CsvFileSink(str(capture_dir), 1, HEADER)
    writer = capture.CaptureWriter(sink, 1.0, flush_seconds=0.1)
    log = labels.LabelLog(str(capture_dir), SPEC, index=labels.CapturedIndex())
    with running(serving_root, capture=writer, feedback=log) as background:
        yield background


def test_rows_are_sent_with_ids_and_their_labels_come_back_in_the_export(
        serving_root, span_csv, schema, tmp_path):
    r = replay.Replay.from_csv(span_csv, schema, KEYS, 'tips', rows_per_request=2,
                               signature=tiny_serving.SIGNATURE)
    # Rows 2 (no fare) and 5 (no tips) are left out: 5 rows, 3 requests of <= 2.
    assert [i['company'] for i in r.instances] == ['Cab 0', 'Cab 1', 'Cab 3', 'Cab 4', 'Cab 6']
    assert r.labels == [0.0, 0.25, 0.75, 1.0, 1.5]
    assert len(r.request_ids) == 3 and len(set(r.request_ids)) == 3
    assert r.pending_labels()[3] == {'request_id': r.request_ids[1], 'row': 1, 'tips': 1.0}
    capture_dir = tmp_path / 'capture'
    with capturing(serving_root, capture_dir) as background:
        sent = r.send(background.url, tiny_serving.MODEL, concurrency=2)
        assert (sent.requests, sent.rows, sent.ok, sent.failed) == (3, 5, 3, 0)
        assert sum(sent.by_version.values()) == 3 and set(sent.by_version) <= {'1', '2'}
        delivered = r.deliver_labels(background.url, tiny_serving.MODEL, batch_size=2)
        assert (delivered.sent, delivered.accepted, delivered.unknown, delivered.duplicate,
                delivered.requests) == (5, 5, 0, 0, 3)
        # Delivered twice: the server counts duplicates, the first label wins.
        again = r.deliver_labels(background.url, tiny_serving.MODEL)
        assert (again.accepted, again.duplicate) == (0, 5)
    result = export.export(str(capture_dir), None, str(tmp_path / 'data'), SPEC)
    rows = capture.read_parts([os.path.join(result.directory, export.DATA_FILE)])
    # Two client threads: captured (so exported) in the order the requests landed.
    assert sorted((row['company'], float(row['tips'])) for row in rows) == list(zip(
        ['Cab 0', 'Cab 1', 'Cab 3', 'Cab 4', 'Cab 6'], [0.0, 0.25, 0.75, 1.0, 1.5]))
    assert result.counts.captured == 5 and result.counts.labeled == 5
    # The captured rows carry the replay's request ids.
    meta = [line for part in capture.part_files(str(capture_dir), 1)
            for line in capture.read_meta(part)]
    assert sorted({m['request_id'] for m in meta}) == sorted(r.request_ids)


def test_a_row_limit_and_the_labels_file_for_capture_label(span_csv, schema, tmp_path):
    r = replay.Replay.from_csv(span_csv, schema, KEYS, 'tips', limit=2, token='t1')
    assert r.request_ids == ['replay-t1-000000', 'replay-t1-000001']
    path = r.write_labels_csv(str(tmp_path / 'labels.csv'))
    assert labels.labels_from_csv(path, SPEC) == [
        labels.Label('replay-t1-000000', 0, 0.0), labels.Label('replay-t1-000001', 0, 0.25)]


def test_failed_requests_are_counted_not_hidden(serving_root, span_csv, schema, tmp_path):
    # A feature the model does not take: TF Serving's 400 for every request.
    r = replay.Replay.from_csv(span_csv, schema, KEYS + ('pickup_latitude',), 'tips',
                               signature=tiny_serving.SIGNATURE)
    with capturing(serving_root, tmp_path / 'capture') as background:
        sent = r.send(background.url, tiny_serving.MODEL)
    assert (sent.ok, sent.failed, sent.statuses, sent.by_version) == (0, 5, {'400': 5}, {})


def test_labels_to_a_server_without_capture_are_refused_with_its_message(
        serving_root, span_csv, schema):
    r = replay.Replay.from_csv(span_csv, schema, KEYS, 'tips', signature=tiny_serving.SIGNATURE)
    with running(serving_root) as background:
        with pytest.raises(replay.ReplayError, match=r'feedback to .*:feedback refused \(400\)'):
            r.deliver_labels(background.url, tiny_serving.MODEL)


def test_a_server_that_is_not_there_is_a_replay_error(span_csv, schema):
    r = replay.Replay.from_csv(span_csv, schema, KEYS, 'tips')
    with pytest.raises(replay.ReplayError, match='feedback to http://127.0.0.1:9/'):
        r.deliver_labels('http://127.0.0.1:9', tiny_serving.MODEL)
    sent = r.send('http://127.0.0.1:9', tiny_serving.MODEL, timeout=2)
    assert sent.ok == 0 and sent.statuses == {'transport': 5}


@pytest.mark.parametrize('keys, label, kwargs, message', [
    (('fare', 'nope'), 'tips', {}, 'has no column nope'),
    (KEYS, 'tip', {}, 'has no column tip'),
    (KEYS, 'tips', {'limit': 0}, 'row limit must be at least 1'),
    (KEYS, 'tips', {'rows_per_request': 0}, 'rows per request must be at least 1'),
])
def test_bad_input_is_one_clear_error(span_csv, schema, keys, label, kwargs, message):
    with pytest.raises(replay.ReplayError, match=message):
        replay.Replay.from_csv(span_csv, schema, keys, label, **kwargs)


def test_a_span_without_a_usable_row_is_refused(tmp_path, schema):
    path = tmp_path / 'data.csv'
    write_csv(str(path), ['fare', 'company', 'tips'], [('', 'Cab', '1.0')])
    with pytest.raises(replay.ReplayError, match='nothing to replay'):
        replay.Replay.from_csv(str(path), schema, KEYS, 'tips')
    with pytest.raises(replay.ReplayError, match='cannot read'):
        replay.Replay.from_csv(str(tmp_path / 'missing.csv'), schema, KEYS, 'tips')


def test_versions_text():
    assert replay.versions_text({'2': 40, '1': 360}, {1: 'stable', 2: 'canary'}) == \
        'v1 stable 360, v2 canary 40'
    assert replay.versions_text({}) == 'none'

