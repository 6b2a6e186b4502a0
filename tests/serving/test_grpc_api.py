"""TF Serving's gRPC API (`serve --grpc-port`) through TF Serving's own, unmodified stubs.

A real ModelServer with REST and gRPC on free loopback ports, serving the two
tiny real SavedModels of tiny_serving (stable v1, canary v2 at 50%), called
with `PredictionServiceStub` / `ModelServiceStub` from tensorflow-serving-api
and, for the same rows and keys, with REST, whose answers are the reference.
The last test runs the `tfx-canary serve --grpc-port 0` command itself.
"""
import contextlib
import os
import re
import signal
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest

from serving import capture, labels
from tests.conftest import PROJECT_ROOT, SCHEMA_PATH
from tests.serving import tiny_serving
from tests.serving.conftest import predict_body, running, wait_for

MODEL = tiny_serving.MODEL
SIGNATURE = tiny_serving.SIGNATURE


@pytest.fixture(scope='module')
def serving_root(tmp_path_factory):
    return tiny_serving.stage_two_versions(tmp_path_factory.mktemp('tiny'))


class Clients:
    """REST (httpx) and gRPC (TF Serving's stubs) clients of one running server."""

    def __init__(self, background):
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        self.background = background
        self.server = background.server
        self.http = httpx.Client(base_url=background.url, timeout=30)
        self.channel = grpc.insecure_channel('127.0.0.1:%d' % self.server.grpc.port)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self):
        self.channel.close()
        self.http.close()


@contextlib.contextmanager
def serving(serving_root, **config):
    with running(serving_root, grpc_port=0, **config) as background:
        clients = Clients(background)
        try:
            yield clients
        finally:
            clients.close()


BODY_LIMIT = 2 ** 16


@pytest.fixture(scope='module')
def clients(serving_root):
    with serving(serving_root, max_body_bytes=BODY_LIMIT) as c:
        yield c


def predict_request(rows, version=None, label=None, name=MODEL, signature=SIGNATURE, **inputs):
    """A PredictRequest of tiny_serving rows (`inputs` replaces or adds TensorProtos)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    columns = {'fare': tf.make_tensor_proto([r['fare'] for r in rows], tf.float32),
               'company': tf.make_tensor_proto([r['company'] for r in rows])}
    columns.update(inputs)
    for alias, proto in columns.items():
        if proto is not None:
            request.inputs[alias].CopyFrom(proto)
    return request


def grpc_predict(clients, request, metadata=()):
    """(probabilities, served version, trailing metadata as a dict) of one Predict."""
    import tensorflow as tf
    response, call = clients.predictions.Predict.with_call(request, metadata=metadata,
                                                           timeout=30)
    return (tf.make_ndarray(response.outputs['probabilities'])[:, 0],
            response.model_spec.version.value, dict(call.trailing_metadata()))


def rest_predict(clients, path, rows, headers=None):
    response = clients.http.post(path, json=predict_body(rows, SIGNATURE), headers=headers)
    assert response.status_code == 200, response.text
    return np.array(response.json()['predictions'])[:, 0], response.headers


def grpc_error(call, request, **kwargs):
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30, **kwargs)
    return raised.value.code(), raised.value.details()


ROWS = tiny_serving.instances(4)


def test_predict_by_version_and_label_answers_what_rest_answers(clients):
    for version, label in ((1, 'stable'), (2, 'canary')):
        rest, _ = rest_predict(clients, '/v1/models/%s/versions/%d:predict' % (MODEL, version),
                               ROWS)
        by_version, served, trailing = grpc_predict(clients, predict_request(ROWS, version))
        assert served == version and trailing['x-model-version'] == str(version)
        assert trailing['x-model-role'] == label
        # The REST JSON prints float32 shortest: equal as float32.
        np.testing.assert_array_equal(by_version, rest.astype(np.float32))
        by_label, served, _ = grpc_predict(clients, predict_request(ROWS, label=label))
        assert served == version
        np.testing.assert_array_equal(by_label, by_version)
    # The two versions really differ, so the routing checks below mean something.
    assert not np.allclose(grpc_predict(clients, predict_request(ROWS, 1))[0],
                           grpc_predict(clients, predict_request(ROWS, 2))[0])


def test_the_response_names_model_version_and_signature_like_tf_serving(clients):
    response = clients.predictions.Predict(predict_request(ROWS, 2), timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == (MODEL, 2, SIGNATURE)
    assert list(response.outputs) == ['probabilities']
    assert [d.size for d in response.outputs['probabilities'].tensor_shape.dim] == [4, 1]
    request = predict_request(ROWS, 2)
    request.output_filter.append('probabilities')
    assert list(clients.predictions.Predict(request, timeout=30).outputs) == ['probabilities']
    request.output_filter[:] = ['logits']
    code, details = grpc_error(clients.predictions.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'output tensor alias not found in signature: logits' in details


def _fares(values, rows):
    """A DT_FLOAT TensorProto of shape [rows] with `values` in float_val (not tensor_content)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, float_val=values,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=rows)]))


def test_every_tensor_encoding_tf_reads_is_read_alike(clients):
    packed = grpc_predict(clients, predict_request(ROWS, 1))[0]
    repeated = grpc_predict(clients, predict_request(
        ROWS, 1, fare=_fares([r['fare'] for r in ROWS], len(ROWS))))[0]
    np.testing.assert_array_equal(repeated, packed)
    # Fewer values than the shape: TensorFlow repeats the last one.
    same = [ROWS[0]] * len(ROWS)
    filled = grpc_predict(clients, predict_request(same, 1, fare=_fares([ROWS[0]['fare']],
                                                                         len(ROWS))))[0]
    np.testing.assert_array_equal(filled, grpc_predict(clients, predict_request(same, 1))[0])


def test_unversioned_calls_follow_the_split_sticky_by_key_like_rest(clients):
    path = '/v1/models/%s:predict' % MODEL
    served = {}
    for i in range(24):
        key = 'user-%d' % i
        _, version, _ = grpc_predict(clients, predict_request(ROWS[:1]),
                                     metadata=[('x-request-key', key)])
        _, again, _ = grpc_predict(clients, predict_request(ROWS[:1]),
                                   metadata=[('x-request-key', key)])
        _, headers = rest_predict(clients, path, ROWS[:1], {'X-Request-Key': key})
        assert version == again == int(headers['x-model-version']), key
        served[key] = version
    # 50% canary: 24 keys land on both versions (a 1-in-8-million miss otherwise).
    assert set(served.values()) == {1, 2}


def test_metadata_and_status_through_the_official_stubs(clients):
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                         model_pb2)
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL, version_label='canary'),
        metadata_field=['signature_def'])
    response = clients.predictions.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata['signature_def'].Unpack(signatures)
    raw = signatures.signature_def[SIGNATURE]
    assert set(raw.inputs) == {'fare', 'company'} and set(raw.outputs) == {'probabilities'}

    status = clients.models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL)), timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (2, available, 0), (1, available, 0)]


def _status_request(name, version=None):
    from tensorflow_serving.apis import get_model_status_pb2, model_pb2
    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    return get_model_status_pb2.GetModelStatusRequest(model_spec=spec)


def test_bad_requests_get_tf_serving_status_codes_and_the_server_keeps_serving(clients):
    import tensorflow as tf
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                         inference_pb2, model_pb2, regression_pb2)
    predict = clients.predictions.Predict
    code, details = grpc_error(predict, predict_request(ROWS, name='nope'))
    assert code == grpc.StatusCode.NOT_FOUND and 'Latest(nope)' in details
    code, details = grpc_error(predict, predict_request(ROWS, version=9))
    assert code == grpc.StatusCode.NOT_FOUND and 'Specific(taxi, 9)' in details
    code, details = grpc_error(predict, predict_request(ROWS, company=None))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'Missing but required: {company}' in details
    code, details = grpc_error(predict, predict_request(
        ROWS, fare=tf.make_tensor_proto(['5.0'] * len(ROWS))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'fare' in details and 'DT_FLOAT' in details and 'DT_STRING' in details
    code, details = grpc_error(predict, predict_request(ROWS, signature='nope'))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and '"nope" not found' in details
    code, details = grpc_error(predict, predict_request(ROWS, label='beta'))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'label: beta' in details
    code, details = grpc_error(predict, predict_request(ROWS), metadata=[('x-request-id', 'a b')])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'x-request-id' in details
    # The REST body limit (--max-body-bytes) holds for gRPC messages too.
    code, _ = grpc_error(predict, predict_request(tiny_serving.instances(BODY_LIMIT // 8)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

    code, _ = grpc_error(clients.models.GetModelStatus, _status_request('nope'))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = grpc_error(clients.models.GetModelStatus, _status_request(MODEL, 9))
    assert code == grpc.StatusCode.NOT_FOUND and 'version 9' in details
    code, details = grpc_error(clients.predictions.GetModelMetadata,
                               get_model_metadata_pb2.GetModelMetadataRequest(
                                   model_spec=model_pb2.ModelSpec(name=MODEL)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'metadata_field' in details

    for call, request in ((clients.predictions.Classify, classification_pb2.ClassificationRequest()),
                          (clients.predictions.Regress, regression_pb2.RegressionRequest()),
                          (clients.predictions.MultiInference,
                           inference_pb2.MultiInferenceRequest())):
        code, details = grpc_error(call, request)
        assert code == grpc.StatusCode.UNIMPLEMENTED and 'use Predict' in details
    # Still serving, on both protocols.
    assert grpc_predict(clients, predict_request(ROWS, 1))[1] == 1
    rest_predict(clients, '/v1/models/%s/versions/1:predict' % MODEL, ROWS)


def _requests(snapshot, version):
    entry = snapshot['models'][MODEL]['lifetime'].get(str(version), {})
    return entry.get('requests', 0), entry.get('by_route', {}).get('version', 0)


def _prometheus(clients, series):
    text = clients.http.get('/metrics').text
    match = re.search(r'^%s (\S+)$' % re.escape(series), text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_grpc_predicts_count_in_metrics_and_the_snapshot_like_rest(clients):
    series = ('tfx_canary_predict_requests_total{model="taxi",role="canary",route="version",'
              'version="2"}')
    grpc_ok = 'tfx_canary_grpc_requests_total{code="OK",method="Predict"}'
    before = (_requests(clients.http.get('/monitoring/snapshot').json(), 2),
              _prometheus(clients, series), _prometheus(clients, grpc_ok))
    for _ in range(3):
        grpc_predict(clients, predict_request(ROWS, 2))
    rest_predict(clients, '/v1/models/%s/versions/2:predict' % MODEL, ROWS)
    after = (_requests(clients.http.get('/monitoring/snapshot').json(), 2),
             _prometheus(clients, series), _prometheus(clients, grpc_ok))
    assert (after[0][0] - before[0][0], after[0][1] - before[0][1]) == (4, 4)
    assert after[1] - before[1] == 4
    assert after[2] - before[2] == 3


def test_capture_and_feedback_know_grpc_calls_by_the_id_the_client_got(serving_root, tmp_path):
    spec = labels.label_spec_from_schema(SCHEMA_PATH)
    sink = capture.CsvFileSink(str(tmp_path), 1, capture.header_from_schema(SCHEMA_PATH))
    writer = capture.CaptureWriter(sink, 1.0, flush_seconds=0.1)
    log = labels.LabelLog(str(tmp_path), spec, index=labels.CapturedIndex().load(str(tmp_path)))
    with serving(serving_root, capture=writer, feedback=log) as clients:
        _, _, own = grpc_predict(clients, predict_request(ROWS[:2], 1),
                                 metadata=[('x-request-id', 'order-7')])
        _, _, made = grpc_predict(clients, predict_request(ROWS[2:3], 2))
        assert own['x-request-id'] == 'order-7'
        assert re.fullmatch(r'[0-9a-f]{32}', made['x-request-id'])
        answer = clients.http.post('/v1/models/%s:feedback' % MODEL, json={'labels': [
            {'request_id': 'order-7', 'row': 1, 'tips': 2.5},
            {'request_id': made['x-request-id'], 'row': 0, 'tips': 0.0}]})
        assert answer.json() == {'accepted': 2, 'unknown': 0, 'duplicate': 0}
    meta = [m for part in capture.part_files(str(tmp_path), 1) for m in capture.read_meta(part)]
    assert [(m['request_id'], m['row'], m['version'], m['role']) for m in meta] == [
        ('order-7', 0, 1, 'stable'), ('order-7', 1, 1, 'stable'),
        (made['x-request-id'], 0, 2, 'canary')]


def test_shadow_mode_mirrors_grpc_calls_to_the_canary(serving_root):
    with serving(serving_root, mode='shadow') as clients:
        for _ in range(5):
            _, version, trailing = grpc_predict(clients, predict_request(ROWS))
            assert version == 1 and trailing['x-model-role'] == 'stable'

        def compared():
            window = clients.http.get('/monitoring/snapshot').json()['models'][MODEL]['window']
            return window['shadow']['comparisons'] == 5 * len(ROWS) and window
        window = wait_for(compared, what='5 mirrored gRPC calls')
        assert window['versions']['2']['by_route'] == {'shadow': 5}
        assert window['shadow']['dropped'] == 0


def test_the_serve_command_serves_grpc_on_a_free_port_and_stops_cleanly(serving_root, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=os.pathsep.join(
        filter(None, [PROJECT_ROOT, os.environ.get('PYTHONPATH')])))
    proc = subprocess.Popen([sys.executable, '-m', 'runners.cli', 'serve', '--serving-root',
                             serving_root, '--port', '0', '--grpc-port', '0'],
                            cwd=str(tmp_path), env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            match = re.search(r'gRPC \(TF Serving PredictionService, ModelService\) on '
                              r'127\.0\.0\.1:(\d+)', line)
            if match:
                break
        assert match, ''.join(lines)
        from tensorflow_serving.apis import prediction_service_pb2_grpc
        with grpc.insecure_channel('127.0.0.1:%s' % match.group(1)) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_request(ROWS, label='canary'), timeout=60)
        assert response.model_spec.version.value == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
