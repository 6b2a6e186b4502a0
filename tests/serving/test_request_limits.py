"""Request bodies the server must refuse cleanly: too deeply nested, too large.

A deeply nested body is a 400 (INVALID_ARGUMENT, TF Serving's `{"error": ...}`),
not a 500 from a RecursionError; a body over `ServerConfig.max_body_bytes` is a
413, answered as soon as the limit is crossed (by Content-Length before the body
is read, or while counting chunks) instead of after reading it all. The e2e
tests run a real server on loopback over the pipeline's staged models.
"""
import json
import socket

import httpx
import pytest

from serving import codec
from serving.errors import ServingError
from tests.serving.conftest import predict_body, running

LIMIT = 64 * 1024
PREDICT = '/v1/models/taxi:predict'


def nested(depth, inner=b'1'):
    return b'{"instances": ' + b'[' * depth + inner + b']' * depth + b'}'


# ---------------------------------------------------------------- codec (no pipeline)

@pytest.mark.parametrize('depth', [codec.MAX_JSON_DEPTH, 900, 100000])
def test_too_deep_json_is_invalid_argument(depth):
    # 900 levels parse with Python's json under its default recursion limit,
    # but would overflow later steps (error messages, tensor decoding).
    with pytest.raises(ServingError) as e:
        codec.parse_request(nested(depth))
    assert e.value.code == 'INVALID_ARGUMENT' and e.value.http_status == 400
    assert e.value.message.startswith('JSON Parse error: ')
    assert 'nested too deeply' in e.value.message


def test_depth_limit_counts_only_structure():
    # The document's own object is level 1, so instances may nest MAX - 1 deep.
    request = codec.parse_request(nested(codec.MAX_JSON_DEPTH - 1))
    assert request.format == codec.ROW
    # Brackets inside strings (escaped quotes included) are data, not nesting.
    text = '[' * 5000 + '\\"{{' + ']' * 5000
    body = json.dumps({'instances': [text, {'b64': '{['}]}).encode()
    assert codec.parse_request(body).payload[0] == text
    # Many rows: lots of brackets, shallow nesting.
    rows = [{'fare': [1.0], 'company': ['x']} for _ in range(5000)]
    assert len(codec.parse_request(json.dumps({'instances': rows}).encode()).payload) == 5000


@pytest.mark.parametrize('body, fragment', [
    (b'{"instances": [' + b'1' * 5000 + b']}', 'JSON Parse error'),  # int digit limit
    (b'{"instances": ["\xff"]}', 'Invalid encoding'),
    (b'{"instances": [1]', 'JSON Parse error'),
], ids=['5000-digit-integer', 'not-utf8', 'truncated'])
def test_any_body_that_does_not_parse_is_invalid_argument(body, fragment):
    with pytest.raises(ServingError) as e:
        codec.parse_request(body)
    assert e.value.code == 'INVALID_ARGUMENT' and fragment in e.value.message


# ---------------------------------------------------------------- real server

@pytest.fixture(scope='module')
def server(module_workspace, tmp_path_factory):
    snapshot = tmp_path_factory.mktemp('metrics') / 'serving-metrics.json'
    with running(module_workspace / 'serving', snapshot_path=str(snapshot),
                 max_body_bytes=LIMIT) as background:
        yield background


@pytest.fixture(scope='module')
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _still_serving(http, instances):
    ok = http.post(PREDICT, json=predict_body(instances[:1]))
    assert ok.status_code == 200, ok.text
    assert len(ok.json()['predictions']) == 1


def _raw_exchange(server, head, chunks=(), read_timeout=30):
    """Sends `head` then `chunks` on a raw socket; returns (status, headers, body, sent bytes).

    Stops sending as soon as a response arrives, so a server that answers
    early is seen answering early.
    """
    sock = socket.create_connection((server.host, server.port), timeout=read_timeout)
    sent = 0
    try:
        sock.sendall(head)
        sock.setblocking(False)
        response = b''
        for chunk in chunks:
            try:
                response += sock.recv(65536)
            except BlockingIOError:
                pass
            if response:
                break
            try:
                sock.setblocking(True)
                sock.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            finally:
                sock.setblocking(False)
        sock.setblocking(True)
        sock.settimeout(read_timeout)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            response += data
            if b'\r\n\r\n' in response:
                header, _, body = response.partition(b'\r\n\r\n')
                length = [int(line.split(b':', 1)[1]) for line in header.split(b'\r\n')
                          if line.lower().startswith(b'content-length:')]
                if length and len(body) >= length[0]:
                    break
    finally:
        sock.close()
    header, _, body = response.partition(b'\r\n\r\n')
    lines = header.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = dict((k.strip().lower(), v.strip())
                   for k, v in (line.split(':', 1) for line in lines[1:]))
    return status, headers, body, sent


def _head(path=PREDICT, **headers):
    lines = ['POST %s HTTP/1.1' % path, 'Host: 127.0.0.1', 'Content-Type: application/json']
    lines += ['%s: %s' % (k.replace('_', '-'), v) for k, v in headers.items()]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


@pytest.mark.e2e
@pytest.mark.parametrize('depth', [300, 900, 30000])  # 30000: 60 KB, under LIMIT
def test_deeply_nested_json_is_400_and_the_server_keeps_serving(http, instances, depth):
    response = http.post(PREDICT, content=nested(depth))
    assert response.status_code == 400, response.text
    assert response.headers['content-type'] == 'application/json'
    error = response.json()
    assert set(error) == {'error'} and error['error'].startswith('JSON Parse error')
    _still_serving(http, instances)


@pytest.mark.e2e
def test_a_body_at_exactly_the_limit_is_served(http, instances):
    body = json.dumps(predict_body(instances[:3])).encode()
    body += b' ' * (LIMIT - len(body))  # JSON allows trailing whitespace
    assert len(body) == LIMIT
    response = http.post(PREDICT, content=body)
    assert response.status_code == 200, response.text
    assert len(response.json()['predictions']) == 3
    # The same body sent chunked, without a Content-Length.
    chunked = http.post(PREDICT, content=iter([body[:1000], body[1000:LIMIT // 2],
                                               body[LIMIT // 2:]]))
    assert chunked.status_code == 200, chunked.text


def _assert_413(status, headers, body):
    assert status == 413, body
    assert headers['content-type'] == 'application/json'
    error = json.loads(body)
    assert set(error) == {'error'}
    assert 'Request body too large' in error['error'] and str(LIMIT) in error['error']


@pytest.mark.e2e
def test_a_body_one_byte_over_the_limit_is_413(server, http, instances):
    body = json.dumps(predict_body(instances[:3])).encode()
    body += b' ' * (LIMIT + 1 - len(body))
    status, headers, text, _ = _raw_exchange(
        server, _head(Content_Length=len(body)), [body])
    _assert_413(status, headers, text)
    _still_serving(http, instances)


@pytest.mark.e2e
def test_a_declared_oversized_body_is_413_before_it_is_sent(server, http, instances):
    # 200 MB declared, nothing of it sent: the answer comes from Content-Length alone.
    status, headers, text, sent = _raw_exchange(server, _head(Content_Length=200 * 2 ** 20))
    _assert_413(status, headers, text)
    assert sent == 0
    # The Starlette side (every other route) refuses by Content-Length too.
    status, headers, text, _ = _raw_exchange(
        server, _head('/v1/models/taxi:classify', Content_Length=LIMIT + 1))
    _assert_413(status, headers, text)
    _still_serving(http, instances)


@pytest.mark.e2e
def test_a_chunked_body_over_the_limit_is_413_while_it_is_being_sent(server, http, instances):
    piece = b' ' * 8192
    chunk = b'%x\r\n%s\r\n' % (len(piece), piece)
    # Up to 4 MB offered (and never the terminating chunk): the server must
    # answer once it has counted past the limit, not wait for the end.
    status, headers, text, sent = _raw_exchange(
        server, _head(Transfer_Encoding='chunked'), [chunk] * 512)
    _assert_413(status, headers, text)
    assert sent < 512 * len(chunk)
    _still_serving(http, instances)
