"""Live quality per version in `serve`: labels sent to :feedback for rows the
server answered are derived by the serving version's own transform signature
and counted per version and role (real server on loopback, tiny models).

The tiny models' transform signature labels a row positive when tips > 2
(not the taxi rule tips > 0.2 * fare), so the counts prove the server asks the
model and keeps no copy of the rule.
"""
import contextlib
import math
import os
import re
import time

import httpx
import numpy as np
import pytest

from rollout import control
from rollout.live_quality import QUALITY_KEY, LiveQuality
from serving import capture, labels
from tests.conftest import SCHEMA_PATH
from tests.serving import tiny_serving
from tests.serving.conftest import predict_body, running

MODEL = 'taxi'
SIGNATURE = 'predict_raw'
TRANSFORM = tiny_serving.TRANSFORM_SIGNATURE
LABEL_KEY = 'big_tipper_xf'
PREDICT = '/v1/models/%s:predict' % MODEL
FEEDBACK = '/v1/models/%s:feedback' % MODEL
SPEC = labels.label_spec_from_schema(SCHEMA_PATH)
HEADER = capture.header_from_schema(SCHEMA_PATH)


def _label_rule(examples):
    """The tiny models' transform: a label rule that is not the taxi one
    (tips > 2, not tips > 0.2 x fare), so counts that match it prove the
    server used the model's signature."""
    import tensorflow as tf
    parsed = tf.io.parse_example(examples, {
        'tips': tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        'fare': tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        # Required, and never sent by clients (as the taxi model's).
        'trip_start_timestamp': tf.io.FixedLenFeature([], tf.int64)})
    return {LABEL_KEY: tf.cast(parsed['tips'] > 2.0, tf.int64), 'fare_xf': parsed['fare']}


def save_model(path, weight):
    return tiny_serving.save_raw_model(path, weight, transform=_label_rule)


@pytest.fixture(scope='module')
def serving_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('live')
    serving = os.path.join(str(root), 'serving')
    controller = control.RolloutController(serving, MODEL)
    for version in (1, 2):   # v1 stable, v2 canary at 50%
        controller.stage(save_model(os.path.join(str(root), 'exports', str(version)),
                                    version / 5), canary_percent=50)
    return serving


@contextlib.contextmanager
def live_server(serving_root, capture_dir, **config):
    sink = capture.CsvFileSink(str(capture_dir), 1, HEADER)
    writer = capture.CaptureWriter(sink, 1.0, flush_seconds=0.1)
    log = labels.LabelLog(str(capture_dir), SPEC, index=labels.CapturedIndex().load(
        str(capture_dir)))
    config.setdefault('label_key', LABEL_KEY)
    config.setdefault('transform_signature', TRANSFORM)
    with running(serving_root, capture=writer, feedback=log, **config) as background:
        with httpx.Client(base_url=background.url, timeout=30) as client:
            yield client, background


def rows(count, start=0):
    return [{'fare': 5.0 + i, 'company': 'Cab %d' % i} for i in range(start, start + count)]


def predict(client, instances, key=None, label=None):
    path = PREDICT if label is None else '/v1/models/%s/labels/%s:predict' % (MODEL, label)
    headers = {'X-Request-Key': key} if key else {}
    response = client.post(path, json=predict_body(instances, SIGNATURE), headers=headers)
    assert response.status_code == 200, response.text
    return (response.headers['x-request-id'], int(response.headers['x-model-version']),
            [p[0] for p in response.json()['predictions']])


def feedback(client, items):
    response = client.post(FEEDBACK, json={'labels': [
        {'request_id': rid, 'row': row, 'tips': tips} for rid, row, tips in items]})
    assert response.status_code == 200, response.text
    return response.json()


def snapshot(client):
    response = client.get('/monitoring/snapshot')
    assert response.status_code == 200
    return response.json()['models'][MODEL]


def by_hand(pairs):
    """(labeled, correct, log loss sum) of (p, label) pairs, computed here.

    p as the model's float32 (JSON prints its shortest repr; near 1, log(1 - p)
    is sensitive to the digits beyond it)."""
    pairs = [(float(np.float32(p)), y) for p, y in pairs]
    correct = sum((p >= 0.5) == bool(y) for p, y in pairs)
    loss = -sum(math.log(min(max(p, 1e-7), 1 - 1e-7)) if y
                else math.log(1 - min(max(p, 1e-7), 1 - 1e-7)) for p, y in pairs)
    return len(pairs), correct, loss


def test_labels_join_the_version_that_answered_by_the_models_own_rule(serving_root, tmp_path):
    with live_server(serving_root, tmp_path / 'capture') as (client, _):
        rid, version, ps = predict(client, rows(4), label='stable')
        assert version == 1
        tips = [3.0, 1.5, 0.0, 2.5]      # model rule tips > 2: 1, 0, 0, 1
        # (The taxi rule tips > 0.2 * fare would say 1, 1, 0, 1 for fares 5..8.)
        result = feedback(client, [(rid, i, t) for i, t in enumerate(tips)])
        assert result == {'accepted': 4, 'unknown': 0, 'duplicate': 0}
        entry = snapshot(client)
    expected = list(zip(ps, [1, 0, 0, 1]))
    labeled, correct, loss = by_hand(expected)
    for quality in (entry['window']['versions']['1'][QUALITY_KEY],
                    entry['lifetime']['1'][QUALITY_KEY]):
        q = LiveQuality.from_dict(quality)
        assert (q.labeled, q.correct, q.positives) == (labeled, correct, 2)
        assert q.log_loss_sum == pytest.approx(loss, rel=1e-6)
        assert q.predicted_sum == pytest.approx(sum(ps), rel=1e-6)
        assert q.calibration_gap == pytest.approx(sum(ps) / 4 - 0.5, rel=1e-6)
        assert quality['accuracy'] == pytest.approx(correct / 4)
    assert entry['window']['versions']['1'][QUALITY_KEY]['labeled'] == 4
    assert '2' not in entry['lifetime'] or entry['lifetime']['2'][QUALITY_KEY]['labeled'] == 0


def test_canary_and_stable_counted_apart_duplicates_and_unknown_ids_not_counted(
        serving_root, tmp_path):
    with live_server(serving_root, tmp_path / 'capture') as (client, _):
        served = {1: [], 2: []}
        for i in range(40):   # the sticky key splits 50/50
            rid, version, ps = predict(client, rows(2, i), key='user-%d' % i)
            served[version].append((rid, ps))
        assert served[1] and served[2]
        items, expected = [], {1: [], 2: []}
        for version, requests in served.items():
            for n, (rid, ps) in enumerate(requests):
                for row in range(2):
                    tip = 3.0 if (n + row) % 3 else 0.5
                    items.append((rid, row, tip))
                    expected[version].append((ps[row], int(tip > 2.0)))
        feedback(client, items + [('never-served', 0, 3.0), (items[0][0], 5, 3.0)])
        # A second label for a row already labeled: logged, never counted again.
        again = feedback(client, [(items[0][0], items[0][1], 0.0)])
        assert again == {'accepted': 0, 'unknown': 0, 'duplicate': 1}
        entry = snapshot(client)
        text = client.get('/monitoring/prometheus/metrics').text
    for version in (1, 2):
        q = LiveQuality.from_dict(entry['window']['versions'][str(version)][QUALITY_KEY])
        labeled, correct, loss = by_hand(expected[version])
        assert (q.labeled, q.correct) == (labeled, correct)
        assert q.log_loss_sum == pytest.approx(loss, rel=1e-6)
        role = 'stable' if version == 1 else 'canary'
        assert re.search(r'tfx_canary_labeled_rows_total\{model="taxi",role="%s",'
                         r'version="%d"\} %d\.0' % (role, version, labeled), text), text
        assert re.search(r'tfx_canary_labeled_correct_total\{model="taxi",role="%s",'
                         r'version="%d"\} %d\.0' % (role, version, correct), text)
        gauge = re.search(r'tfx_canary_live_accuracy\{model="taxi",role="%s",version="%d"\} '
                          r'(\S+)' % (role, version), text)
        assert float(gauge.group(1)) == pytest.approx(correct / labeled)
        assert re.search(r'tfx_canary_live_auc\{model="taxi",role="%s",version="%d"\}'
                         % (role, version), text)
        assert re.search(r'tfx_canary_live_calibration_gap\{model="taxi",role="%s",'
                         r'version="%d"\}' % (role, version), text)
        assert re.search(r'tfx_canary_labeled_log_loss_sum_total\{model="taxi",role="%s",'
                         r'version="%d"\} (\S+)' % (role, version), text)


def test_a_rollout_change_starts_a_new_quality_window(serving_root, tmp_path):
    with live_server(serving_root, tmp_path / 'capture') as (client, background):
        rid, _, ps = predict(client, rows(2), label='stable')
        feedback(client, [(rid, 0, 3.0)])
        before = snapshot(client)['window']
        control.RolloutController(serving_root, MODEL).set_traffic(20)
        deadline = time.monotonic() + 30
        while snapshot(client)['window']['started_at'] == before['started_at']:
            assert time.monotonic() < deadline, 'the rollout change was not picked up'
            time.sleep(0.05)
        # A label for a row served before the change: lifetime only.
        feedback(client, [(rid, 1, 3.0)])
        rid2, _, ps2 = predict(client, rows(1), label='stable')
        feedback(client, [(rid2, 0, 0.0)])
        entry = snapshot(client)
        control.RolloutController(serving_root, MODEL).set_traffic(50)
    assert before['versions']['1'][QUALITY_KEY]['labeled'] == 1
    window = LiveQuality.from_dict(entry['window']['versions']['1'][QUALITY_KEY])
    assert (window.labeled, window.positives) == (1, 0)
    assert window.predicted_sum == pytest.approx(ps2[0], rel=1e-6)
    assert LiveQuality.from_dict(entry['lifetime']['1'][QUALITY_KEY]).labeled == 3


def test_without_the_transform_signature_labels_are_logged_not_counted(serving_root,
                                                                      tmp_path):
    with live_server(serving_root, tmp_path / 'capture',
                     transform_signature='no_such_signature') as (client, _):
        rid, _, _ = predict(client, rows(2), label='stable')
        assert feedback(client, [(rid, 0, 3.0)]) == {'accepted': 1, 'unknown': 0,
                                                     'duplicate': 0}
        entry = snapshot(client)
    assert entry['window']['versions']['1'][QUALITY_KEY]['labeled'] == 0
    assert labels.first_labels(str(tmp_path / 'capture'))[0] == {(rid, 0): 3.0}


def test_bulk_labels_appended_while_serving_are_counted_once(serving_root, tmp_path):
    capture_dir = tmp_path / 'capture'
    with live_server(serving_root, capture_dir) as (client, _):
        rid, _, ps = predict(client, rows(3), label='stable')
        feedback(client, [(rid, 2, 3.0)])     # via the API: counted at once
        # `capture label` is another writer of the same log.
        bulk = labels.LabelLog(str(capture_dir), SPEC)
        bulk.append([labels.Label(rid, 0, 3.0), labels.Label(rid, 1, 0.0),
                     labels.Label(rid, 2, 0.0),           # a duplicate of the API's
                     labels.Label('never-served', 0, 1.0)], 'file:/tmp/bulk.csv')
        deadline = time.monotonic() + 30
        while snapshot(client)['window']['versions']['1'][QUALITY_KEY]['labeled'] < 3:
            assert time.monotonic() < deadline, 'the bulk labels were not counted'
            time.sleep(0.05)
        time.sleep(1.2)   # two more snapshot ticks: nothing counted twice
        entry = snapshot(client)
    q = LiveQuality.from_dict(entry['window']['versions']['1'][QUALITY_KEY])
    labeled, correct, loss = by_hand(list(zip(ps, [1, 0, 1])))
    assert (q.labeled, q.positives, q.correct) == (3, 2, correct)
    assert q.log_loss_sum == pytest.approx(loss, rel=1e-6)


def check_taxi_live_quality(serving_root, capture_dir, instances):
    """The trained taxi model: labels derived by its transform_features (tips > 0.2 fare)."""
    rows_ = instances[:20]
    with live_server(serving_root, capture_dir) as (client, _):
        rid, version, ps = predict(client, rows_, label='stable')
        tips = [row['fare'] * (0.3 if i % 2 else 0.1) for i, row in enumerate(rows_)]
        assert feedback(client, [(rid, i, t) for i, t in enumerate(tips)])['accepted'] == 20
        entry = snapshot(client)
    q = LiveQuality.from_dict(entry['window']['versions'][str(version)][QUALITY_KEY])
    labeled, correct, loss = by_hand(list(zip(ps, [i % 2 for i in range(20)])))
    assert (q.labeled, q.positives, q.correct) == (20, 10, correct)
    assert q.log_loss_sum == pytest.approx(loss, rel=1e-5)
    assert q.auc() is not None


@pytest.mark.e2e
def test_the_taxi_models_transform_derives_the_live_label(served_workspace, instances,
                                                          tmp_path):
    check_taxi_live_quality(str(served_workspace / 'serving'), tmp_path / 'capture', instances)
