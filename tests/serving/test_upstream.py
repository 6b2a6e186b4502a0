"""Router mode (`serve --upstream URL`, serving/upstream.py) in front of a real upstream.

No TF Serving binary can be installed here, so the upstream stand-in is a
second real `tfx-canary serve` in local mode (ModelServer on a loopback port,
tiny real SavedModels from tiny_serving.py), which answers TF Serving's REST
API with TF Serving's bodies and status codes. The router in front of it is a
RouterServer on its own port. The contract test instead records what the
router sends with a tiny HTTP server, the TF Serving API boundary, and checks
the paths and bodies against TF Serving's REST grammar.
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rollout import control
from serving import capture, labels, server as server_lib
from serving.server import ModelServer, ServerConfig
from serving.upstream import RouterServer, Upstream
from tests.conftest import PROJECT_ROOT, SCHEMA_PATH, one_error_line, run_cli_quietly
from tests.serving import tiny_serving
from tests.serving.conftest import BackgroundServer, predict_body, running, wait_for

MODEL = tiny_serving.MODEL
OTHER = 'cab'             # staged where the router looks, not served by the upstream
PREDICT = '/v1/models/%s:predict' % MODEL
SIGNATURE = tiny_serving.SIGNATURE


def _stage(serving_root, exports, model, versions=(1, 2)):
    controller = control.RolloutController(serving_root, model)
    for version in versions:
        src = tiny_serving.save_raw_model(os.path.join(exports, model, str(version)),
                                          version / 10)
        controller.stage(src, canary_percent=50)
    return controller


@pytest.fixture(scope='module')
def serving_root(tmp_path_factory):
    """taxi v1 stable + v2 canary at 50% (served by the upstream), and `cab` (router only)."""
    root = tmp_path_factory.mktemp('router')
    serving = tiny_serving.stage_two_versions(root)
    _stage(serving, str(root / 'exports'), OTHER, versions=(1,))
    return serving


@pytest.fixture(scope='module')
def upstream(serving_root):
    """The upstream stand-in: a local-mode server for taxi only (see the module docstring)."""
    with running(serving_root, model_names=(MODEL,)) as background:
        yield background


@contextlib.contextmanager
def router(serving_root, upstream_url, timeout=10.0, max_pending=None, **config):
    config.setdefault('poll_seconds', 0.1)
    config.setdefault('snapshot_seconds', 0.5)
    server = RouterServer(ServerConfig(str(serving_root), **config),
                          Upstream(upstream_url, timeout=timeout, max_pending=max_pending))
    background = BackgroundServer(server, '127.0.0.1', 0).start()
    try:
        with httpx.Client(base_url=background.url, timeout=30) as client:
            client.server = server
            yield client
    finally:
        background.stop()


def _body(count=2, start=0, **extra):
    return predict_body(tiny_serving.instances(count, start), SIGNATURE, **extra)


def _versions_by_key(client, keys):
    answers = {}
    for key in keys:
        response = client.post(PREDICT, json=_body(), headers={'X-Request-Key': key})
        assert response.status_code == 200, response.text
        answers[key] = int(response.headers['x-model-version'])
    return answers


def test_answers_are_the_upstream_labels_answers_and_the_split_is_sticky(
        serving_root, upstream):
    with router(serving_root, upstream.url) as client, \
            httpx.Client(base_url=upstream.url, timeout=30) as direct:
        for role, version in (('stable', 1), ('canary', 2)):
            path = '/v1/models/%s/labels/%s:predict' % (MODEL, role)
            want = direct.post(path, json=_body(3))
            got = client.post(path, json=_body(3))
            assert got.status_code == 200 and got.content == want.content
            assert got.headers['x-model-version'] == str(version)
            assert got.headers['x-model-role'] == role
        # Routed requests: the role the router chose answers, byte for byte.
        direct_answers = {role: direct.post('/v1/models/%s/labels/%s:predict' % (MODEL, role),
                                            json=_body(3)).content
                          for role in ('stable', 'canary')}
        roles = set()
        for i in range(40):
            response = client.post(PREDICT, json=_body(3, request_key='user-%d' % i))
            roles.add(response.headers['x-model-role'])
            assert response.content == direct_answers[response.headers['x-model-role']]
        assert roles == {'stable', 'canary'}   # 50%: both, by 40 keys (p of one: 2e-12)
        keys = ['user-%d' % i for i in range(20)]
        assert _versions_by_key(client, keys) == _versions_by_key(client, keys)


def test_the_split_follows_rollout_json_without_a_restart(tmp_path):
    serving = tiny_serving.stage_two_versions(tmp_path)
    controller = control.RolloutController(serving, MODEL)
    keys = ['k%d' % i for i in range(30)]
    with running(serving, model_names=(MODEL,)) as upstream, \
            router(serving, upstream.url) as client:
        controller.set_traffic(0)
        wait_for(lambda: client.server.registry.get(MODEL).plan.traffic == 0,
                 what='the router to apply 0%')
        assert set(_versions_by_key(client, keys).values()) == {1}
        controller.set_traffic(100)
        wait_for(lambda: client.server.registry.get(MODEL).plan.traffic == 100,
                 what='the router to apply 100%')
        assert set(_versions_by_key(client, keys).values()) == {2}
        controller.promote()
        wait_for(lambda: client.server.registry.get(MODEL).plan.canary is None,
                 what='the router to apply the promotion')
        wait_for(lambda: upstream.server.registry.get(MODEL).plan.canary is None,
                 what='the upstream to apply the promotion')
        response = client.post(PREDICT, json=_body())
        assert (response.status_code, response.headers['x-model-version'],
                response.headers['x-model-role']) == (200, '2', 'stable')


def test_shadow_sends_a_copy_to_the_canary_label_and_compares(serving_root, upstream):
    def canary_label_calls():
        text = httpx.get(upstream.url + '/metrics').text
        prefix = ('tfx_canary_predict_requests_total{model="taxi",role="canary",'
                  'route="label",version="2"} ')
        return next((float(line[len(prefix):]) for line in text.splitlines()
                     if line.startswith(prefix)), 0.0)

    bodies = [_body(2, start=i) for i in range(10)]
    with httpx.Client(base_url=upstream.url, timeout=30) as direct:
        p = {role: [v[0] for b in bodies for v in direct.post(
            '/v1/models/%s/labels/%s:predict' % (MODEL, role), json=b).json()['predictions']]
            for role in ('stable', 'canary')}
    same_side = sum((s >= 0.5) == (c >= 0.5) for s, c in zip(p['stable'], p['canary']))
    before = canary_label_calls()
    with router(serving_root, upstream.url, mode='shadow') as client:
        for body in bodies:
            response = client.post(PREDICT, json=body)
            assert response.headers['x-model-role'] == 'stable'
        server = client.server

        def shadow():
            window = server.metrics.snapshot()['models'][MODEL]['window']
            return window['shadow'] if window['shadow']['comparisons'] >= 20 else None
        compared = wait_for(shadow, what='20 shadow rows')
        assert compared['comparisons'] == 20 and compared['canary_errors'] == 0
        assert compared['agreements'] == same_side
        versions = server.metrics.snapshot()['models'][MODEL]['window']['versions']
        assert versions['2']['by_route'] == {'shadow': 10}
    assert canary_label_calls() - before == 10


def test_capture_keeps_the_request_ids_clients_got_and_feedback_accepts_them(
        serving_root, upstream, tmp_path):
    header = capture.header_from_schema(SCHEMA_PATH)
    sink = capture.CsvFileSink(str(tmp_path), 1, header)
    writer = capture.CaptureWriter(sink, 1.0, flush_seconds=0.1)
    log = labels.LabelLog(str(tmp_path), labels.label_spec_from_schema(SCHEMA_PATH),
                          index=labels.CapturedIndex().load(str(tmp_path)))
    with router(serving_root, upstream.url, capture=writer, feedback=log) as client:
        ids = [client.post(PREDICT, json=_body(2, start=i)).headers['x-request-id']
               for i in range(3)]
        ids.append(client.post(PREDICT, json=_body(1), headers={'X-Request-Id': 'order-9'})
                   .headers['x-request-id'])
        answer = client.post('/v1/models/%s:feedback' % MODEL, json={'labels': [
            {'request_id': ids[0], 'row': 1, 'tips': 2.5},
            {'request_id': 'order-9', 'row': 0, 'tips': 0}]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {'accepted': 2, 'unknown': 0, 'duplicate': 0}
    meta = [m for part in capture.part_files(str(tmp_path), 1)
            for m in capture.read_meta(part)]
    assert [(m['request_id'], m['row']) for m in meta] == [
        (ids[0], 0), (ids[0], 1), (ids[1], 0), (ids[1], 1), (ids[2], 0), (ids[2], 1),
        ('order-9', 0)]
    rows = [row for part in capture.part_files(str(tmp_path), 1)
            for row in capture.read_parts([part])]
    assert [r['company'] for r in rows][:2] == ['Cab 0', 'Cab 1']


def test_upstream_errors_pass_through_with_status_and_body(serving_root, upstream):
    with router(serving_root, upstream.url) as client, \
            httpx.Client(base_url=upstream.url, timeout=30) as direct:
        bad = _body(1)
        bad['signature_name'] = 'nope'
        path = '/v1/models/%s/labels/stable:predict' % MODEL
        want, got = direct.post(path, json=bad), client.post(path, json=bad)
        assert (got.status_code, got.content) == (want.status_code, want.content)
        assert got.status_code == 400 and 'nope' in got.json()['error']
        # `cab` is in the router's rollout but not served upstream: TF Serving's 404.
        want = direct.post('/v1/models/%s/labels/stable:predict' % OTHER, json=_body(1))
        got = client.post('/v1/models/%s:predict' % OTHER, json=_body(1))
        assert (got.status_code, got.content) == (404, want.content)
        errors = client.server.metrics.snapshot()['models'][OTHER]['window']['versions']
        assert errors['1']['client_errors'] == 1


def _counter(client, reason):
    prefix = 'tfx_canary_upstream_errors_total{model="taxi",reason="%s"} ' % reason
    for line in client.get('/metrics').text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def test_an_upstream_that_is_down_or_silent_is_a_quick_503_and_counted(serving_root):
    # Down: a port nobody listens on (connection refused).
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        closed = 'http://127.0.0.1:%d' % s.getsockname()[1]
    # Silent: the kernel accepts connections (listen backlog), nothing ever answers.
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(64)
    try:
        for url, reason in ((closed, 'connect'),
                            ('http://127.0.0.1:%d' % silent.getsockname()[1], 'timeout')):
            with router(serving_root, url, timeout=0.5) as client:
                started = time.monotonic()
                response = client.post(PREDICT, json=_body())
                took = time.monotonic() - started
                assert response.status_code == 503
                assert 'upstream' in response.json()['error']
                assert took < 5, took   # bounded by --upstream-timeout, not a hang
                assert _counter(client, reason) == 1
                assert client.post(PREDICT, json=_body()).status_code == 503
                assert _counter(client, reason) == 2
    finally:
        silent.close()


def test_calls_beyond_the_in_flight_limit_are_refused_not_queued(serving_root):
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(64)
    try:
        with router(serving_root, 'http://127.0.0.1:%d' % silent.getsockname()[1],
                    timeout=3, max_pending=1) as client:
            waiting = threading.Thread(target=client.post, args=(PREDICT,),
                                       kwargs={'json': _body()})
            waiting.start()
            wait_for(lambda: client.server.upstream.pending == 1, what='one call in flight')
            started = time.monotonic()
            refused = client.post(PREDICT, json=_body())
            assert refused.status_code == 503 and 'in flight' in refused.json()['error']
            assert time.monotonic() - started < 2   # answered at once, not after the timeout
            assert _counter(client, 'overloaded') == 1
            waiting.join()
            assert _counter(client, 'timeout') == 1
    finally:
        silent.close()


def test_an_upstream_restart_costs_no_request_once_it_is_back(serving_root):
    """Pooled connections to the old process are dead: the next call opens a new one."""
    def upstream(port):
        return BackgroundServer(ModelServer(ServerConfig(serving_root, model_names=(MODEL,),
                                                         poll_seconds=0.1)),
                                '127.0.0.1', port).start()
    first = upstream(0)
    port = first.port
    with router(serving_root, first.url) as client:
        assert client.post(PREDICT, json=_body()).status_code == 200
        first.stop()
        second = upstream(port)   # the router's idle connection is to the first one
        try:
            for _ in range(3):
                assert client.post(PREDICT, json=_body()).status_code == 200
        finally:
            second.stop()


def test_the_router_snapshot_is_what_rollout_analyze_reads(serving_root, upstream):
    with router(serving_root, upstream.url) as client:
        for i in range(40):
            assert client.post(PREDICT, json=_body(1, request_key='a%d' % i)).status_code == 200
        code, out = run_cli_quietly(['rollout', 'analyze', '--serving-root', serving_root,
                                     '--model-name', MODEL, '--metrics',
                                     str(client.base_url), '--json'])
    decision = json.loads(out)
    assert code in (0, 1) and decision['decision'] in ('wait', 'hold', 'promote', 'rollback')
    checks = {c['check']: c for c in decision['checks']}
    requests = checks.get('requests') or checks.get('min requests')
    assert requests is not None, sorted(checks)
    assert requests['stable'] + requests['canary'] == 40, requests


# ---------------------------------------------------------------- contract

class _Recorder(BaseHTTPRequestHandler):
    """TF Serving's side of the wire: records each request, answers like TF Serving."""
    calls = []

    def _answer(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.calls.append(('POST', self.path, {k.lower(): v for k, v in self.headers.items()},
                           body))
        rows = len(json.loads(body).get('instances', [None]))
        self._answer(200, {'predictions': [[0.25]] * rows})

    def do_GET(self):  # noqa: N802
        self.calls.append(('GET', self.path, dict(self.headers), b''))
        inputs = {name: {'dtype': dtype, 'tensor_shape': {'dim': [{'size': '-1'}],
                                                          'unknown_rank': False}}
                  for name, dtype in (('fare', 'DT_FLOAT'), ('company', 'DT_STRING'))}
        self._answer(200, {'model_spec': {'name': MODEL, 'version': '1'}, 'metadata': {
            'signature_def': {'signature_def': {SIGNATURE: {'inputs': inputs}}}}})

    def log_message(self, *args):
        pass


def test_the_router_speaks_tf_servings_rest_grammar(serving_root, tmp_path):
    _Recorder.calls = []
    recorder = ThreadingHTTPServer(('127.0.0.1', 0), _Recorder)
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    writer = capture.CaptureWriter(capture.CsvFileSink(
        str(tmp_path), 1, capture.header_from_schema(SCHEMA_PATH)), 1.0)
    # Sent as bytes: the router must forward exactly these.
    sent = [json.dumps(_body(2, request_key='k%d' % i)).encode() for i in range(12)]
    try:
        with router(serving_root, 'http://127.0.0.1:%d' % recorder.server_port,
                    capture=writer) as client:
            for body in sent:
                response = client.post(PREDICT, content=body,
                                       headers={'content-type': 'application/json'})
                assert response.json() == {'predictions': [[0.25], [0.25]]}
            columnar = {'signature_name': SIGNATURE, 'inputs': {'fare': [1.0],
                                                                'company': ['x']}}
            client.post('/v1/models/%s/versions/2:predict' % MODEL, json=columnar)
    finally:
        recorder.shutdown()
    posts = [c for c in _Recorder.calls if c[0] == 'POST']
    labels_used = set()
    for _, path, headers, body in posts[:-1]:
        match = server_lib._PREDICT_RE.fullmatch(path)
        assert match and match.group(1) == MODEL and match.group(2) is None, path
        assert match.group(4) == 'predict'
        labels_used.add(match.group(3))
        assert headers['content-type'] == 'application/json'
        document = json.loads(body)
        assert document['signature_name'] == SIGNATURE and 'instances' in document
    assert labels_used == {'stable', 'canary'}
    assert [p[3] for p in posts[:-1]] == sent
    _, path, _, body = posts[-1]
    match = server_lib._PREDICT_RE.fullmatch(path)
    assert (match.group(2), match.group(3)) == ('2', None)
    assert json.loads(body) == columnar
    # Each version's signatures, read once for capture, by GetModelMetadata's path.
    fetched = []
    for _, path, _, _ in (c for c in _Recorder.calls if c[0] == 'GET'):
        match = server_lib._STATUS_RE.fullmatch(path)
        assert match and match.group(4) == 'metadata' and match.group(3) is None, path
        fetched.append((match.group(1), match.group(2)))
    assert sorted(fetched) == [(OTHER, '1'), (MODEL, '1'), (MODEL, '2')]


# ---------------------------------------------------------------- the command

def _serve(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=PROJECT_ROOT)
    return subprocess.run([sys.executable, '-m', 'runners.cli', 'serve', *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize('args, fragment', [
    (['--upstream', 'tf-serving:8501'], '--upstream must be an http:// or https:// URL'),
    (['--upstream', 'http://host:99999'], '--upstream has an invalid port'),
    (['--upstream', 'http://h:8501', '--upstream-timeout', '0'],
     '--upstream-timeout must be a positive number of seconds'),
    (['--upstream', 'http://h:8501', '--grpc-port', '0'],
     '--grpc-port cannot be used with --upstream'),
])
def test_bad_upstream_flags_are_one_error_line(tmp_path, args, fragment):
    (tmp_path / 'serving').mkdir()
    done = _serve('--serving-root', str(tmp_path / 'serving'), *args)
    assert fragment in one_error_line(done.returncode, done.stdout, done.stderr)


def test_serve_upstream_needs_only_rollout_json(serving_root, upstream, tmp_path):
    """`serve --upstream` as a real process, over a serving root holding rollout.json alone."""
    bare = tmp_path / 'serving' / MODEL
    bare.mkdir(parents=True)
    shutil.copy(os.path.join(serving_root, MODEL, 'rollout.json'), bare)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=PROJECT_ROOT)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'runners.cli', 'serve', '--serving-root',
         str(tmp_path / 'serving'), '--port', str(port), '--upstream', upstream.url],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = 'http://127.0.0.1:%d' % port

        def answered():
            try:
                return httpx.post(url + PREDICT, json=_body(), timeout=5)
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                return None
        response = wait_for(answered, timeout=120, what='the router to answer')
        assert response.status_code == 200 and len(response.json()['predictions']) == 2
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert 'routing to upstream %s' % upstream.url in err
