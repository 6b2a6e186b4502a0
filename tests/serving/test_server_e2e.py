"""`tfx-canary serve` over the real staged models: TF Serving's REST API, the split, shadow.

A real server on 127.0.0.1 (free port) driven by real HTTP clients, serving
the versions the pipeline staged (stable v1, canary v2 at 10%).
"""
import base64
import json
import os

import httpx
import numpy as np
import pytest

from rollout import control
from serving import client
from tests.serving.conftest import MODEL, predict_body, running, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def server(module_workspace, tmp_path_factory):
    snapshot = tmp_path_factory.mktemp('metrics') / 'serving-metrics.json'
    with running(module_workspace / 'serving', snapshot_path=str(snapshot)) as background:
        yield background


@pytest.fixture(scope='module')
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope='module')
def in_process(module_workspace):
    """The staged SavedModels called directly, to check the server's answers."""
    import tensorflow as tf
    return {v: tf.saved_model.load(str(module_workspace / 'serving' / MODEL / str(v)))
            for v in (1, 2)}


def _direct(model, rows):
    import tensorflow as tf
    fn = model.signatures['predict_raw']
    specs = fn.structured_input_signature[1]
    return fn(**{k: tf.constant([r[k] for r in rows], dtype=specs[k].dtype)
                 for k in specs})['probabilities'].numpy()


def test_model_status_and_metadata_have_tf_serving_shapes(http):
    status = http.get('/v1/models/taxi')
    assert status.status_code == 200
    assert status.json() == {'model_version_status': [
        {'version': v, 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}
        for v in ('2', '1')]}
    assert http.get('/v1/models/taxi/labels/canary').json()['model_version_status'][0][
        'version'] == '2'
    meta = http.get('/v1/models/taxi/versions/2/metadata').json()
    assert meta['model_spec'] == {'name': 'taxi', 'signature_name': '', 'version': '2'}
    signatures = meta['metadata']['signature_def']['signature_def']
    assert {'serving_default', 'predict_raw'} <= set(signatures)
    fare = signatures['predict_raw']['inputs']['fare']
    assert fare['dtype'] == 'DT_FLOAT'
    assert fare['tensor_shape'] == {'dim': [{'size': '-1', 'name': ''}], 'unknown_rank': False}
    assert signatures['predict_raw']['method_name'] == 'tensorflow/serving/predict'


def test_predict_row_and_columnar_match_the_saved_model(http, instances, in_process):
    rows = instances[:5]
    row = http.post('/v1/models/taxi/versions/1:predict', json=predict_body(rows))
    assert row.status_code == 200 and row.headers['content-type'] == 'application/json'
    predictions = row.json()['predictions']
    assert np.allclose(predictions, _direct(in_process[1], rows), atol=1e-6)
    columnar = http.post('/v1/models/taxi/labels/canary:predict', json={
        'signature_name': 'predict_raw', 'inputs': {k: [r[k] for r in rows] for k in rows[0]}})
    assert columnar.status_code == 200 and set(columnar.json()) == {'outputs'}
    assert np.allclose(columnar.json()['outputs'], _direct(in_process[2], rows), atol=1e-6)
    assert columnar.headers['x-model-version'] == '2'
    assert columnar.headers['x-model-role'] == 'canary'


def test_serving_default_takes_b64_tf_examples(http, instances, in_process):
    from tensorflow.core.example import example_pb2
    rows = instances[:3]
    encoded = []
    for r in rows:
        example = example_pb2.Example()
        for k, v in r.items():
            feature = example.features.feature[k]
            if isinstance(v, str):
                feature.bytes_list.value.append(v.encode())
            elif isinstance(v, float):
                feature.float_list.value.append(v)
            else:
                feature.int64_list.value.append(v)
        encoded.append({'b64': base64.b64encode(example.SerializeToString()).decode()})
    response = http.post('/v1/models/taxi/versions/1:predict', json={'instances': encoded})
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()['predictions'], _direct(in_process[1], rows), atol=1e-5)


BAD_REQUESTS = [
    # (method, path, body, status, message fragment)
    ('POST', '/v1/models/taxi:predict', b'{"instances": [', 400, 'JSON Parse error'),
    ('POST', '/v1/models/taxi:predict', b'', 400, 'The document is empty'),
    ('POST', '/v1/models/nope:predict', b'{"instances": [1]}', 404,
     'Servable not found for request: Latest(nope)'),
    ('POST', '/v1/models/taxi/versions/9:predict', b'{"instances": [1]}', 404,
     'Servable not found for request: Specific(taxi, 9)'),
    ('POST', '/v1/models/taxi/labels/beta:predict', b'{"instances": [1]}', 400,
     'Unrecognized servable version label: beta'),
    ('POST', '/v1/models/taxi:predict', b'{"signature_name": "nope", "instances": [1]}', 400,
     'Serving signature name: "nope" not found in signature def'),
    ('POST', '/v1/models/taxi:classify', b'{"examples": []}', 501, 'use :predict'),
    # Errors raised inside the model are 400s with TensorFlow's message.
    ('POST', '/v1/models/taxi/versions/1:predict', b'{"instances": [{"b64": "AAAA"}]}', 400,
     'Could not parse example input'),
    ('GET', '/v1/models/nope', None, 404, 'Could not find any versions of model nope'),
    ('GET', '/v1/models/taxi/versions/9', None, 404, 'Could not find version 9 of model taxi'),
    ('GET', '/v1/models/taxi/labels/beta/metadata', None, 400, 'Unrecognized servable'),
    ('GET', '/v1/models', None, 400, 'Missing model name in request.'),
    ('GET', '/v1/nothing/here', None, 400, 'Malformed request: GET /v1/nothing/here'),
    ('DELETE', '/v1/models/taxi', None, 400, 'Malformed request'),
]


@pytest.mark.parametrize('method, path, body, status, message', BAD_REQUESTS)
def test_bad_requests_get_tf_serving_errors_and_the_server_keeps_serving(
        http, instances, method, path, body, status, message):
    response = http.request(method, path, content=body)
    assert response.status_code == status
    assert message in response.json()['error']
    ok = http.post('/v1/models/taxi:predict', json=predict_body(instances[:1]))
    assert ok.status_code == 200


@pytest.mark.parametrize('change, message', [
    (dict(fare='12.5'), 'key: fare of \'instances\' list. Error: INVALID_ARGUMENT: JSON Value: '
                        '"12.5" Type: String is not of expected type: float'),
    (dict(trip_start_hour=18.5), 'is not of expected type: int64'),
    (dict(payment_type=3), 'is not of expected type: string'),
    (dict(tips=2.0), 'does not have named input: tips'),
    (dict(fare=[1.0, 2.0]), 'input fare has shape [1,2]'),
])
def test_wrong_feature_types_are_400s(http, instances, change, message):
    body = predict_body([dict(instances[0], **change)])
    response = http.post('/v1/models/taxi:predict', json=body)
    assert response.status_code == 400
    assert message in response.json()['error']
    # Columns of different lengths reach the model, which refuses them.
    columns = {k: [v] for k, v in instances[0].items()}
    columns['fare'] = [1.0, 2.0]
    response = http.post('/v1/models/taxi:predict', json={'signature_name': 'predict_raw',
                                                          'inputs': columns})
    assert response.status_code == 400
    assert 'Dimension 0 in both shapes must be equal' in response.json()['error']
    missing = dict(instances[0])
    del missing['company']
    response = http.post('/v1/models/taxi:predict', json=predict_body([missing]))
    assert response.status_code == 400 and 'keys must be equal to' in response.json()['error']


def test_metrics_endpoints(http, instances, server):
    # Its own bad request: the 400 counter must not depend on earlier tests.
    assert http.post('/v1/models/taxi:predict', content=b'{"instances": ').status_code == 400
    for _ in range(3):
        http.post('/v1/models/taxi/labels/stable:predict', json=predict_body(instances[:2]))
    text = http.get('/metrics').text
    assert 'tfx_canary_predict_requests_total{model="taxi",role="stable",route="label",' \
           'version="1"}' in text
    assert 'tfx_canary_predict_latency_seconds_bucket{' in text
    assert 'tfx_canary_rest_requests_total{api="predict",code="400"}' in text
    assert http.get('/monitoring/prometheus/metrics').text.startswith('# HELP')
    snapshot = http.get('/monitoring/snapshot').json()
    window = snapshot['models']['taxi']['window']
    assert window['rollout'] == {'stable': 1, 'canary': 2, 'traffic': 10, 'phase': 'canary',
                                 'event_id': window['rollout']['event_id']}
    assert window['versions']['1']['requests'] >= 3
    assert window['versions']['1']['latency_p99_seconds'] > 0
    # The same snapshot lands on disk for `rollout analyze`.
    # The first write comes one snapshot period after start; until then there is no file.
    path = server.server.snapshot_path(MODEL)
    wait_for(lambda: os.path.exists(path)
             and json.load(open(path))['models']['taxi']['window']['versions'],
             what='the snapshot file')


def test_traffic_split_is_statistically_right_and_sticky(served_workspace, instances):
    serving_root = served_workspace / 'serving'
    controller = control.RolloutController(str(serving_root), MODEL)
    controller.set_traffic(30)
    with running(serving_root) as server:
        url = server.url + '/v1/models/taxi:predict'
        bodies = [predict_body([instances[i % len(instances)]]) for i in range(2000)]
        result = client.drive(url, bodies, concurrency=8)
        statuses = [r[0] for r in result['results']]
        assert statuses.count(200) == 2000, set(statuses)
        canary = sum(r[2] == '2' for r in result['results'])
        # Binomial(2000, 0.3): sd 20.5; 5 sd.
        assert abs(canary - 600) < 103, canary

        def versions_by_key(traffic):
            seen = {}
            with httpx.Client(timeout=30) as c:
                for i in range(300):
                    key = 'rider-%d' % i
                    # Once by header, once by the JSON field TF Serving ignores.
                    a = c.post(url, json=predict_body(instances[:1]),
                               headers={'X-Request-Key': key})
                    b = c.post(url, json=predict_body(instances[:1], request_key=key))
                    assert a.headers['x-model-version'] == b.headers['x-model-version'], key
                    seen[key] = a.headers['x-model-version']
            return seen

        at_30 = versions_by_key(30)
        on_canary_30 = {k for k, v in at_30.items() if v == '2'}
        assert abs(len(on_canary_30) - 90) < 5 * 8  # Binomial(300, 0.3): sd ~8
        controller.set_traffic(60)
        wait_for(lambda: server.server.registry.models[MODEL].plan.traffic == 60,
                 what='the server to apply 60%')
        on_canary_60 = {k for k, v in versions_by_key(60).items() if v == '2'}
        assert on_canary_30 <= on_canary_60  # nobody flips back to stable
        assert abs(len(on_canary_60) - 180) < 5 * 9


def test_shadow_answers_with_stable_and_measures_agreement(module_workspace, instances,
                                                           tmp_path):
    rows = instances[:300]
    with running(module_workspace / 'serving', mode='shadow', shadow_max_pending=100000,
                 snapshot_path=str(tmp_path / 'metrics.json')) as server:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            stable = c.post('/v1/models/taxi/versions/1:predict', json=predict_body(rows))
            canary = c.post('/v1/models/taxi/versions/2:predict', json=predict_body(rows))
            p_stable = np.array(stable.json()['predictions'])[:, 0]
            p_canary = np.array(canary.json()['predictions'])[:, 0]
        url = server.url + '/v1/models/taxi:predict'
        result = client.drive(url, [predict_body([r]) for r in rows], concurrency=4)
        # Every client got stable's answer, even with the canary at 10%.
        assert {r[2] for r in result['results']} == {'1'}
        assert [r[0] for r in result['results']].count(200) == len(rows)

        def shadow():
            window = server.server.metrics.snapshot()['models']['taxi']['window']
            return window['shadow'] if window['shadow']['comparisons'] == len(rows) else None

        measured = wait_for(shadow, what='all shadow comparisons')
        assert measured['dropped'] == 0 and measured['canary_errors'] == 0
        # The agreement the server counted is exactly the one computed directly.
        expected = int(np.sum((p_stable >= 0.5) == (p_canary >= 0.5)))
        assert measured['agreements'] == expected
        assert measured['abs_diff_mean'] == pytest.approx(
            float(np.mean(np.abs(p_stable - p_canary))), rel=0.25)
        window = server.server.metrics.snapshot()['models']['taxi']['window']
        assert window['versions']['2']['by_route']['shadow'] == len(rows)
