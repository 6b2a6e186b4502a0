"""Request ids and `POST /v1/models/NAME:feedback` on a real server (loopback, tiny models).

The in-process tests run a ModelServer with capture and a label log on a free
port; the kill -9 test runs `tfx-canary serve` as a real process and kills it
between the capture and the labels.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from serving import capture, export, labels
from tests.conftest import PROJECT_ROOT, SCHEMA_PATH
from tests.serving import tiny_serving
from tests.serving.conftest import predict_body, running, wait_for

PREDICT = '/v1/models/%s:predict' % tiny_serving.MODEL
FEEDBACK = '/v1/models/%s:feedback' % tiny_serving.MODEL
SPEC = labels.label_spec_from_schema(SCHEMA_PATH)
HEADER = capture.header_from_schema(SCHEMA_PATH)


@pytest.fixture(scope='module')
def serving_root(tmp_path_factory):
    return tiny_serving.stage_two_versions(tmp_path_factory.mktemp('tiny'))


@contextlib.contextmanager
def capturing_server(serving_root, capture_dir, rotate_rows=10000):
    sink = capture.CsvFileSink(str(capture_dir), 1, HEADER, max_rows=rotate_rows)
    writer = capture.CaptureWriter(sink, 1.0, flush_seconds=0.1)
    log = labels.LabelLog(str(capture_dir), SPEC, index=labels.CapturedIndex().load(
        str(capture_dir)))
    with running(serving_root, capture=writer, feedback=log) as background:
        with httpx.Client(base_url=background.url, timeout=30) as client:
            yield client


def _predict(client, rows, **kwargs):
    response = client.post(PREDICT, json=predict_body(rows, tiny_serving.SIGNATURE),
                           **kwargs)
    assert response.status_code == 200, response.text
    return response


def _log_lines(capture_dir):
    return labels.read_jsonl(os.path.join(str(capture_dir), labels.LABEL_LOG))


def test_every_predict_answer_carries_a_request_id(serving_root, tmp_path):
    with capturing_server(serving_root, tmp_path / 'capture') as client:
        made = _predict(client, tiny_serving.instances(2)).headers['x-request-id']
        assert re.fullmatch(r'[0-9a-f]{32}', made)
        assert _predict(client, tiny_serving.instances(1)).headers['x-request-id'] != made
        # The client's own: the header, else a top-level field (TF Serving ignores it).
        header = _predict(client, tiny_serving.instances(1),
                          headers={'X-Request-Id': 'order-17'})
        assert header.headers['x-request-id'] == 'order-17'
        body = client.post(PREDICT, json=predict_body(tiny_serving.instances(1),
                                                      tiny_serving.SIGNATURE,
                                                      request_id='order-18'))
        assert body.status_code == 200 and body.headers['x-request-id'] == 'order-18'
        # An id a label could not name is refused, with an id on the answer still.
        bad = client.post(PREDICT, json=predict_body(tiny_serving.instances(1),
                                                     tiny_serving.SIGNATURE),
                          headers={'X-Request-Id': 'has space'})
        assert bad.status_code == 400 and 'request_id' in bad.json()['error']
        assert re.fullmatch(r'[0-9a-f]{32}', bad.headers['x-request-id'])
    parts = capture.part_files(str(tmp_path / 'capture'), 1)
    meta = [line for part in parts for line in capture.read_meta(part)]
    assert [(m['request_id'], m['row']) for m in meta] == [
        (made, 0), (made, 1), (meta[2]['request_id'], 0), ('order-17', 0), ('order-18', 0)]
    assert {m['capture_rate'] for m in meta} == {1.0}


def test_feedback_counts_accepted_unknown_and_duplicate(serving_root, tmp_path):
    with capturing_server(serving_root, tmp_path / 'capture') as client:
        rid = _predict(client, tiny_serving.instances(2)).headers['x-request-id']
        first = client.post(FEEDBACK, json={'labels': [
            {'request_id': rid, 'row': 0, 'tips': 3.5},
            {'request_id': rid, 'row': 1, 'tips': 0},
            {'request_id': 'never-served', 'row': 0, 'tips': 1.0},
            {'request_id': rid, 'row': 2, 'tips': 1.0}]})  # the request had 2 rows
        assert first.status_code == 200, first.text
        assert first.json() == {'accepted': 2, 'unknown': 2, 'duplicate': 0}
        again = client.post(FEEDBACK, json={'labels': [
            {'request_id': rid, 'row': 0, 'tips': 9.0}]})
        assert again.json() == {'accepted': 0, 'unknown': 0, 'duplicate': 1}
    # Everything is in the log (the duplicate flagged); the first label wins.
    lines = _log_lines(tmp_path / 'capture')
    assert [(l['request_id'], l['row'], l['value'], l.get('duplicate', False))
            for l in lines] == [(rid, 0, 3.5, False), (rid, 1, 0.0, False),
                                ('never-served', 0, 1.0, False), (rid, 2, 1.0, False),
                                (rid, 0, 9.0, True)]
    first_wins, duplicates = labels.first_labels(str(tmp_path / 'capture'))
    assert first_wins[(rid, 0)] == 3.5 and duplicates == 1


@pytest.mark.parametrize('body, fragment', [
    (b'{"labels": [', 'JSON Parse error'),
    (b'[1, 2]', 'the body must be {"labels"'),
    (b'{"labels": []}', 'at least one label'),
    (b'{"labels": [{"request_id": "a", "row": 0}]}', 'missing tips'),
    (b'{"labels": [{"request_id": "a", "row": 0, "tip": 1.0}]}', 'unexpected tip'),
    (b'{"labels": [{"request_id": "a", "row": 0, "tips": "3.5"}]}', 'tips must be a number'),
    (b'{"labels": [{"request_id": "a", "row": 0, "tips": true}]}', 'tips must be a number'),
    (b'{"labels": [{"request_id": "a", "row": 0, "tips": -1.0}]}', "below the schema's min"),
    (b'{"labels": [{"request_id": "a", "row": -1, "tips": 1.0}]}', 'row must be'),
    (b'{"labels": [{"request_id": 7, "row": 0, "tips": 1.0}]}', 'request_id must be'),
])
def test_a_malformed_feedback_body_is_a_400_and_writes_nothing(serving_root, tmp_path, body,
                                                               fragment):
    capture_dir = tmp_path / 'capture'
    good = {'request_id': 'a', 'row': 1, 'tips': 2.0}
    with capturing_server(serving_root, capture_dir) as client:
        # A good item before the bad one: the batch is refused whole.
        if body.startswith(b'{"labels": [{'):
            body = body.replace(b'[{', b'[' + json.dumps(good).encode() + b', {', 1)
        response = client.post(FEEDBACK, content=body,
                               headers={'content-type': 'application/json'})
        assert response.status_code == 400, response.text
        assert fragment in response.json()['error']
        missing = client.post('/v1/models/nope:feedback', json={'labels': [good]})
        assert missing.status_code == 404 and 'nope' in missing.json()['error']
    assert _log_lines(capture_dir) == []


def test_a_failed_log_write_is_a_503_that_leaves_nothing(serving_root, tmp_path,
                                                        monkeypatch):
    capture_dir = tmp_path / 'capture'
    body = {'labels': [{'request_id': 'a', 'row': 0, 'tips': 1.0},
                       {'request_id': 'b', 'row': 0, 'tips': 2.0}]}

    def disk_full(f, data):
        f.write(data[:len(data) // 2])  # half the batch reached the file
        f.flush()
        raise OSError(28, 'No space left on device')
    with capturing_server(serving_root, capture_dir) as client:
        monkeypatch.setattr(labels.LabelLog, '_write', staticmethod(disk_full))
        failed = client.post(FEEDBACK, json=body)
        assert failed.status_code == 503
        assert 'No space left on device' in failed.json()['error']
        assert os.path.getsize(capture_dir / labels.LABEL_LOG) == 0
        monkeypatch.undo()
        # Sent again: taken as new labels, not as duplicates of the failed batch.
        again = client.post(FEEDBACK, json=body)
        assert again.json() == {'accepted': 0, 'unknown': 2, 'duplicate': 0}
    assert [e['request_id'] for e in _log_lines(capture_dir)] == ['a', 'b']


def test_a_server_without_capture_refuses_labels(serving_root):
    with running(serving_root) as background:
        response = httpx.post(background.url + FEEDBACK, json={'labels': [
            {'request_id': 'a', 'row': 0, 'tips': 1.0}]})
    assert response.status_code == 400
    assert '--capture-rate above 0' in response.json()['error']


def test_a_label_before_its_part_is_published_is_accepted_and_joined(serving_root, tmp_path):
    capture_dir = tmp_path / 'capture'
    span_dir = capture_dir / 'span-1'
    with capturing_server(serving_root, capture_dir, rotate_rows=2) as client:
        published = _predict(client, tiny_serving.instances(2)).headers['x-request-id']
        wait_for(lambda: capture.part_files(str(capture_dir), 1), what='a published part')
        early = _predict(client, tiny_serving.instances(1, start=5)).headers['x-request-id']
        wait_for(lambda: any(n.endswith('.meta.jsonl.tmp') and os.path.getsize(span_dir / n)
                             for n in os.listdir(span_dir)), what='the row in a temp part')
        # Its row is still in the hidden temp part, yet the server knows it.
        answer = client.post(FEEDBACK, json={'labels': [
            {'request_id': published, 'row': 0, 'tips': 3.0},
            {'request_id': early, 'row': 0, 'tips': 4.25}]})
        assert answer.json() == {'accepted': 2, 'unknown': 0, 'duplicate': 0}
        # Exported now: the published row; the other label waits as pending.
        now = export.export(str(capture_dir), 1, str(tmp_path / 'data'), SPEC)
        assert (now.counts.captured, now.counts.labeled, now.counts.unlabeled,
                now.counts.labels_pending, now.counts.labels_unknown) == (2, 1, 1, 1, 0)
    # Stopping the server published the part: the early label joins its row.
    later = export.export(str(capture_dir), 1, str(tmp_path / 'data'), SPEC)
    assert later.span == now.span + 1
    assert (later.counts.captured, later.counts.labeled, later.counts.labels_pending) == (
        3, 2, 0)
    rows = capture.read_parts([os.path.join(later.directory, export.DATA_FILE)])
    assert [(r['fare'], r['company'], r['tips']) for r in rows] == [
        ('5.0', 'Cab 0', '3.0'), ('10.0', 'Cab 5', '4.25')]


# ---------------------------------------------------------------- a real `serve`, kill -9

def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get('PYTHONPATH')]))
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    return env


def _start_serve(serving_root, capture_dir, port, cwd):
    return subprocess.Popen(
        [sys.executable, '-m', 'runners.cli', 'serve', '--serving-root', serving_root,
         '--port', str(port), '--capture-rate', '1', '--capture-dir', str(capture_dir)],
        cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_up(proc, url):
    def up():
        assert proc.poll() is None, proc.stderr.read()
        try:
            return httpx.get(url + '/v1/models/' + tiny_serving.MODEL, timeout=2).status_code
        except httpx.TransportError:
            return None
    wait_for(up, timeout=240, what='serve to answer')


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_kill_9_of_serve_between_capture_and_labels_loses_nothing_acknowledged(
        serving_root, tmp_path):
    capture_dir = tmp_path / 'capture'
    port = _free_port()
    url = 'http://127.0.0.1:%d' % port
    proc = _start_serve(serving_root, capture_dir, port, tmp_path)
    try:
        _wait_up(proc, url)
        with httpx.Client(base_url=url, timeout=30) as client:
            ids = [_predict(client, tiny_serving.instances(1, start=i)).headers['x-request-id']
                   for i in range(6)]
            early = client.post(FEEDBACK, json={'labels': [
                {'request_id': rid, 'row': 0, 'tips': float(i)} for i, rid in
                enumerate(ids[:3])]})
            assert early.json() == {'accepted': 3, 'unknown': 0, 'duplicate': 0}
        # The rows reach the temp part within the flush interval (1 s).
        wait_for(lambda: sum(len(labels.read_jsonl(p)) for p in labels.meta_files(
            str(capture_dir), include_unpublished=True)) == 6, what='6 rows fsynced')
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing was published (no clean stop), the acknowledged labels are on disk.
    assert capture.part_files(str(capture_dir), 1) == []
    assert len(_log_lines(capture_dir)) == 3

    proc = _start_serve(serving_root, capture_dir, port, tmp_path)
    try:
        _wait_up(proc, url)  # ... having published the killed server's part
        with httpx.Client(base_url=url, timeout=30) as client:
            late = client.post(FEEDBACK, json={'labels': [
                {'request_id': rid, 'row': 0, 'tips': 10.0 + i} for i, rid in
                enumerate(ids[3:])]})
            # Known from the recovered part, though another process captured them.
            assert late.json() == {'accepted': 3, 'unknown': 0, 'duplicate': 0}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    result = export.export(str(capture_dir), None, str(tmp_path / 'data'), SPEC)
    rows = capture.read_parts([os.path.join(result.directory, export.DATA_FILE)])
    assert sorted((r['company'], r['tips']) for r in rows) == sorted(
        [('Cab %d' % i, repr(float(i))) for i in range(3)]
        + [('Cab %d' % i, repr(10.0 + i - 3)) for i in range(3, 6)])
    assert result.counts == export.Counts(6, 6, 0, 0, 0, 0, 0)
