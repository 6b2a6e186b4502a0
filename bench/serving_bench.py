"""`make bench`, serving part: `tfx-canary serve` latency/throughput vs. the SavedModel in process.

What is measured, in one run and on the same request rows (span-2 taxi rows,
signature `predict_raw`, one row per request unless stated):

* **in process** (this process, no HTTP):
  - `savedmodel`: the staged stable version loaded with `tf.saved_model.load`
    and its `predict_raw` signature called with one `tf.constant` per feature,
    as any Python caller would;
  - `savedmodel_json`: the server's own per-request work without HTTP:
    `serving.codec` parsing an equivalent request body, `ModelVersion.predict`
    (which, once the codec has checked the inputs, calls the signature's flat
    function without TensorFlow's per-call argument binding) and encoding the
    `{"predictions": [...]}` answer; i.e. everything the server does per
    request except HTTP, routing, metrics and the thread hop;
* **through the server**: the real `tfx-canary serve` CLI in its own process
  (split mode, the rollout as staged), driven from this process by N client
  threads, each with one keep-alive HTTP/1.1 connection and pre-encoded
  request bytes (a few microseconds of client work per request, so the
  latencies are the server's). Unversioned `POST /v1/models/NAME:predict`,
  i.e. routed by the rollout. The server's CPU time per request is read from
  /proc.
* **gRPC** (`serve --grpc-port`, the same server process): TF Serving's
  `PredictionService/Predict` with the same rows as pre-serialized
  `PredictRequest`s, one channel (its own HTTP/2 connection) per client
  thread, unversioned (routed by the rollout), at the same concurrency
  levels, each level right after REST's so machine noise hits both alike.

The in-process calls and the 1-client server requests are measured in
alternating rounds, so machine noise (other jobs) hits both alike; the
router's overhead is the difference of the pooled p50s from those rounds.
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(PROJECT_ROOT, 'data', 'taxi')
SCHEMA_PATH = os.path.join(DATA_ROOT, 'schema.pbtxt')
SIGNATURE = 'predict_raw'
TARGET_OVERHEAD_P50_MS = 1.0

# (rounds, calls per round and path) of the alternating in-process vs. 1-client
# comparison; seconds (and a request cap) per concurrency level.
# grpc_seconds: per gRPC level (quick: shorter, a smoke test of the gRPC path).
QUICK = {'rounds': 3, 'calls': 300, 'seconds': 2.0, 'max_requests': 20000,
         'concurrency': (1, 4, 16), 'batch': None, 'shadow': False, 'grpc_seconds': 1.0}
FULL = {'rounds': 5, 'calls': 1000, 'seconds': 6.0, 'max_requests': 100000,
        'concurrency': (1, 4, 16), 'batch': (50, 4), 'shadow': True, 'grpc_seconds': 6.0}


def _env():
    return dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3',
                PYTHONPATH=PROJECT_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def _percentile(values, q):
    from serving.client import percentile
    return percentile(values, q)


def _stats_ms(seconds):
    """p50/p99/mean in ms of a list of latencies in seconds."""
    return {'n': len(seconds),
            'p50_ms': round(_percentile(seconds, 50) * 1e3, 3),
            'p99_ms': round(_percentile(seconds, 99) * 1e3, 3),
            'mean_ms': round(statistics.fmean(seconds) * 1e3, 3)}


# ---------------------------------------------------------------- set-up

def make_workspace(work, out=print):
    """Runs the real pipeline on spans 1 and 2 into work/; returns its serving root."""
    workspace = os.path.join(work, 'serving-bench-workspace')
    log_path = os.path.join(work, 'serving-bench-pipeline.log')
    out('  creating a workspace (tfx-canary run --span 1 --span 2, a few minutes)...')
    with open(log_path, 'w') as log:
        proc = subprocess.run([sys.executable, '-m', 'runners.cli', 'run', '--workspace',
                               workspace, '--span', '1', '--span', '2'],
                              cwd=PROJECT_ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path, errors='replace') as f:
            tail = ''.join(f.readlines()[-30:])
        raise RuntimeError('the pipeline run failed (exit %d); log %s:\n%s'
                           % (proc.returncode, log_path, tail))
    return os.path.join(workspace, 'serving')


def _model_name(serving_root):
    from serving.models import discover_models
    names = discover_models(serving_root)
    if not names:
        raise RuntimeError('no model with a rollout.json under %s' % serving_root)
    return 'taxi' if 'taxi' in names else names[0]


def _instances(limit=256):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from modules import features
    from serving import client
    with open(SCHEMA_PATH) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    return client.instances_from_csv(os.path.join(DATA_ROOT, 'span-2', 'data.csv'), schema,
                                     features.RAW_FEATURE_KEYS, limit=limit)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class GrpcConnection:
    """Connection's contract over gRPC: one channel calling Predict with pre-serialized requests.

    No (de)serializers on the client (bytes in, bytes out), as Connection sends
    pre-encoded HTTP, so the latencies are the server's.
    """

    METHOD = '/tensorflow.serving.PredictionService/Predict'

    def __init__(self, host, port, timeout=30):
        import grpc
        self._grpc = grpc
        # Its own subchannel: one TCP connection per client, as for REST.
        self.channel = grpc.insecure_channel('%s:%d' % (host, port),
                                             options=[('grpc.use_local_subchannel_pool', 1)])
        self._predict = self.channel.unary_unary(self.METHOD)
        self.timeout = timeout

    def send(self, data):
        """One Predict; returns (200 or the gRPC code number, trailing metadata, body bytes)."""
        try:
            body, call = self._predict.with_call(data, timeout=self.timeout)
        except self._grpc.RpcError as e:
            return e.code().value[0], {}, b''
        return 200, dict(call.trailing_metadata()), body

    def close(self):
        self.channel.close()


def _grpc_requests(model, instances, dtypes):
    """Serialized PredictRequests (unversioned, SIGNATURE), one row each."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    requests = []
    for row in instances:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = SIGNATURE
        for name, dtype in dtypes.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto([row[name]], dtype))
        requests.append(request.SerializeToString())
    return requests


def _grpc_versioned(model, request_bytes, version):
    """`request_bytes` (a serialized PredictRequest) pinned to `version`."""
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest.FromString(request_bytes)
    request.model_spec.version.value = version
    return request.SerializeToString()


class ServerProcess:
    """`tfx-canary serve` in a child process on 127.0.0.1:<free port>."""

    def __init__(self, serving_root, log_path, *extra):
        self.serving_root = serving_root
        self.log_path = log_path
        self.extra = extra
        self.proc = None
        self.port = None

    def start(self):
        self.port = _free_port()
        self._log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'runners.cli', 'serve', '--serving-root', self.serving_root,
             '--host', '127.0.0.1', '--port', str(self.port), *self.extra],
            cwd=PROJECT_ROOT, env=_env(), stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, model, versions, timeout=300):
        """Waits until the status API lists `versions` as AVAILABLE."""
        deadline = time.monotonic() + timeout
        want = {str(v) for v in versions}
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError('tfx-canary serve exited with %d; log %s:\n%s'
                                   % (self.proc.returncode, self.log_path, self.log_tail()))
            try:
                conn = Connection('127.0.0.1', self.port, timeout=5)
                try:
                    status, _, body = conn.get('/v1/models/%s' % model)
                finally:
                    conn.close()
                if status == 200:
                    states = {s['version']: s['state']
                              for s in json.loads(body)['model_version_status']}
                    if all(states.get(v) == 'AVAILABLE' for v in want):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError('tfx-canary serve was not ready within %ss; log %s'
                                   % (timeout, self.log_path))
            time.sleep(0.2)

    def cpu_seconds(self):
        """User + system CPU of the server process so far (None off Linux)."""
        try:
            with open('/proc/%d/stat' % self.proc.pid) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, lines=30):
        with open(self.log_path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()


# ---------------------------------------------------------------- HTTP client

class Connection:
    """A minimal keep-alive HTTP/1.1 client: pre-encoded requests, Content-Length answers.

    Far cheaper per request than a general client, so the latencies measured
    are the server's, not the client's.
    """

    def __init__(self, host, port, timeout=30):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b''

    @staticmethod
    def post_bytes(host, port, path, body, headers=()):
        head = ['POST %s HTTP/1.1' % path, 'Host: %s:%d' % (host, port),
                'Content-Type: application/json', 'Content-Length: %d' % len(body)]
        head += ['%s: %s' % kv for kv in headers]
        return ('\r\n'.join(head) + '\r\n\r\n').encode('latin-1') + body

    def get(self, path):
        return self.send(('GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n'
                          % (path, self.host, self.port)).encode('latin-1'))

    def send(self, data):
        """Sends one request; returns (status, {lower-case header: value}, body bytes)."""
        self.sock.sendall(data)
        buf = self._buffer
        while True:
            end = buf.find(b'\r\n\r\n')
            if end >= 0:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('the server closed the connection')
            buf += chunk
        lines = buf[:end].decode('latin-1').split('\r\n')
        status = int(lines[0].split(' ', 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(':')
            headers[name.strip().lower()] = value.strip()
        need = end + 4 + int(headers.get('content-length', 0))
        while len(buf) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('the server closed the connection')
            buf += chunk
        self._buffer = buf[need:]
        return status, headers, buf[end + 4:need]

    def close(self):
        self.sock.close()


def _load(port, requests, concurrency, seconds=None, count=None, warmup_seconds=0.3,
          max_requests=None, cpu=None, connect=Connection):
    """Sends `requests` (pre-encoded bytes, cycled) from `concurrency` threads.

    connect('127.0.0.1', port): one client's connection (Connection: HTTP;
    GrpcConnection: gRPC).

    Measures for `seconds` (after `warmup_seconds` whose requests are not
    counted), or exactly `count` requests. Returns latencies, statuses, the
    version header counts, wall seconds and server CPU seconds of the window.
    """
    lock = threading.Lock()
    latencies, failures, versions = [], [], {}
    state = {'i': 0, 'measuring': warmup_seconds <= 0, 'stop': False}
    ready = threading.Barrier(concurrency + 1)
    errors = []

    def worker():
        try:
            conn = connect('127.0.0.1', port)
        except OSError as e:
            errors.append(repr(e))
            ready.wait()
            return
        mine, mine_versions = [], {}
        ready.wait()
        try:
            while not state['stop']:
                with lock:
                    i = state['i']
                    state['i'] += 1
                    measuring = state['measuring']
                if count is not None and measuring and len(latencies) + len(mine) >= count:
                    break
                started = time.perf_counter()
                try:
                    status, headers, _ = conn.send(requests[i % len(requests)])
                except OSError as e:
                    with lock:
                        failures.append(repr(e))
                    conn.close()
                    conn = connect('127.0.0.1', port)
                    continue
                elapsed = time.perf_counter() - started
                if measuring:
                    if status != 200:
                        with lock:
                            failures.append('HTTP %d' % status)
                    else:
                        mine.append(elapsed)
                        version = headers.get('x-model-version')
                        mine_versions[version] = mine_versions.get(version, 0) + 1
                    if len(mine) >= 64:
                        with lock:
                            latencies.extend(mine)
                        mine = []
                    if max_requests and len(latencies) >= max_requests:
                        state['stop'] = True
        finally:
            with lock:
                latencies.extend(mine)
                for v, n in mine_versions.items():
                    versions[v] = versions.get(v, 0) + n
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    if errors:
        state['stop'] = True
        raise RuntimeError('cannot connect to the server: %s' % errors[0])
    if warmup_seconds > 0:
        time.sleep(warmup_seconds)
    with lock:
        state['measuring'] = True
        cpu_start = cpu() if cpu else None
        started = time.perf_counter()
    if seconds is not None:
        deadline = started + seconds
        while time.perf_counter() < deadline and not state['stop']:
            time.sleep(0.05)
        with lock:
            state['stop'] = True
            wall = time.perf_counter() - started
            cpu_end = cpu() if cpu else None
        for t in threads:
            t.join(60)
    else:
        for t in threads:
            t.join(600)
        wall = time.perf_counter() - started
        cpu_end = cpu() if cpu else None
    done = len(latencies)
    server_cpu = (cpu_end - cpu_start) if cpu_start is not None and cpu_end is not None else None
    return {'latencies': latencies, 'failures': failures, 'versions': versions,
            'wall_s': wall, 'requests': done,
            'server_cpu_ms_per_request': (round(server_cpu * 1e3 / done, 3)
                                          if server_cpu is not None and done else None)}


# ---------------------------------------------------------------- in process

class InProcess:
    """The stable version called directly in this process (see the module doc)."""

    def __init__(self, version_dir, model_name, version):
        import tensorflow as tf

        from serving import codec
        from serving.models import ModelVersion
        self._tf, self._codec = tf, codec
        self.function = tf.saved_model.load(version_dir).signatures[SIGNATURE]
        self.dtypes = {k: s.dtype for k, s in self.function.structured_input_signature[1].items()}
        self.model = ModelVersion(model_name, version, version_dir)
        self.model.warm_up()
        self.specs = self.model.specs(SIGNATURE)

    def savedmodel(self, row):
        """One row through the signature: tensors in, NumPy probabilities out."""
        tf = self._tf
        return self.function(**{k: tf.constant([row[k]], dtype=d)
                                for k, d in self.dtypes.items()})['probabilities'].numpy()

    def savedmodel_json(self, body):
        """A request body through the server's JSON codec and the model: response bytes."""
        codec = self._codec
        request = codec.parse_request(body)
        arrays = codec.decode_inputs(request, self.specs)
        outputs = self.model.predict(request.signature_name, arrays)
        return codec.dumps(codec.encode_outputs(outputs, request.format)).encode()

    @staticmethod
    def time_calls(fn, args, count):
        latencies = []
        for i in range(count):
            arg = args[i % len(args)]
            started = time.perf_counter()
            fn(arg)
            latencies.append(time.perf_counter() - started)
        return latencies


# ---------------------------------------------------------------- the run

def _grpc_diffs(model, port, rows, requests, version, in_process):
    """|gRPC answer - SavedModel in process| for `rows` (Predict pinned to `version`)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    conn = GrpcConnection('127.0.0.1', port)
    try:
        diffs = []
        for row, request in zip(rows, requests):
            status, _, answer = conn.send(_grpc_versioned(model, request, version))
            if status != 200:
                raise RuntimeError('gRPC Predict failed with status %s' % status)
            outputs = predict_pb2.PredictResponse.FromString(answer).outputs
            diffs.append(abs(float(tf.make_ndarray(outputs['probabilities'])[0][0])
                             - float(in_process.savedmodel(row)[0][0])))
        return diffs
    finally:
        conn.close()


def _grpc_level(port, requests, n, plan, server):
    """gRPC Predict latency and throughput at `n` clients (a concurrency level's dict)."""
    res = _load(port, requests, n, seconds=plan['grpc_seconds'],
                max_requests=plan['max_requests'], cpu=server.cpu_seconds, connect=GrpcConnection)
    if not res['latencies']:
        raise RuntimeError('no gRPC call succeeded at concurrency %d: %s'
                           % (n, res['failures'][:3]))
    return dict(_stats_ms(res['latencies']), concurrency=n, rows_per_request=1,
                requests=res['requests'], errors=len(res['failures']),
                seconds=round(res['wall_s'], 2),
                throughput_rps=round(res['requests'] / res['wall_s'], 1),
                server_cpu_ms_per_request=res['server_cpu_ms_per_request'],
                versions=res['versions'])


def _grpc_markdown(r):
    """gRPC vs. REST at each concurrency level of this run (ratios: gRPC / REST)."""
    lines = [
        '',
        'gRPC (`serve --grpc-port`, `PredictionService/Predict`, the same rows as serialized '
        '`PredictRequest`s, unversioned; one channel per client thread) vs. REST, each level '
        'measured right after REST\'s on the same server process:',
        '',
        '| clients | REST p50 ms | gRPC p50 ms | REST p99 ms | gRPC p99 ms | REST req/s '
        '| gRPC req/s | gRPC/REST p50 | gRPC/REST req/s |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for rest, grpc_ in zip(r['concurrency'], r['grpc']):
        lines.append('| %d | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %.2f | %.2f |' % (
            rest['concurrency'], rest['p50_ms'], grpc_['p50_ms'], rest['p99_ms'],
            grpc_['p99_ms'], rest['throughput_rps'], grpc_['throughput_rps'],
            grpc_['p50_ms'] / rest['p50_ms'], grpc_['throughput_rps'] / rest['throughput_rps']))
    return lines


def _row_ms(name, st, throughput=None, cpu_ms=None):
    return '| %s | %.2f | %.2f | %s | %s |' % (
        name, st['p50_ms'], st['p99_ms'],
        '%.0f/s' % throughput if throughput is not None else '—',
        '%.2f' % cpu_ms if cpu_ms is not None else '—')


def run(work, quick=False, serving_root=None, out=print):
    """Measures serving; returns the results dict (`markdown`: lines for results.md)."""
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    plan = QUICK if quick else FULL
    os.makedirs(work, exist_ok=True)
    if serving_root is None:
        serving_root = make_workspace(work, out)
    # The server writes its metrics snapshot next to rollout.json: serve a copy,
    # so the given workspace is left exactly as it was.
    root = os.path.join(work, 'serving-bench-root')
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(serving_root, root, symlinks=True,
                    ignore=shutil.ignore_patterns('serving-metrics.json'))
    model = _model_name(root)
    from rollout import state as state_mod
    rollout = state_mod.load_state(os.path.join(root, model, 'rollout.json'), model)
    served = sorted(rollout.versions())
    stable = rollout.stable_version
    if stable is None:
        raise RuntimeError('%s has no stable version to compare with' % model)

    started = time.perf_counter()
    load_before = os.getloadavg()
    grpc_port = _free_port()
    server = ServerProcess(root, os.path.join(work, 'serving-bench-server.log'),
                           '--grpc-port', str(grpc_port)).start()
    try:
        # Load the in-process baseline while the server loads its versions.
        instances = _instances()
        in_process = InProcess(os.path.join(root, model, str(stable)), model, stable)
        bodies = [json.dumps({'signature_name': SIGNATURE, 'instances': [r]}).encode()
                  for r in instances]
        path = '/v1/models/%s:predict' % model
        server.wait_ready(model, served)
        setup_s = time.perf_counter() - started
        port = server.port
        requests = [Connection.post_bytes('127.0.0.1', port, path, b) for b in bodies]

        # The server answers as the SavedModel does (stable, by version).
        conn = Connection('127.0.0.1', port)
        try:
            diffs = []
            for row, body in zip(instances[:5], bodies[:5]):
                status, _, answer = conn.send(Connection.post_bytes(
                    '127.0.0.1', port, '/v1/models/%s/versions/%d:predict' % (model, stable),
                    body))
                if status != 200:
                    raise RuntimeError('predict answered HTTP %d: %s' % (status, answer[:300]))
                diffs.append(abs(json.loads(answer)['predictions'][0][0]
                                 - float(in_process.savedmodel(row)[0][0])))
        finally:
            conn.close()
        grpc_requests = _grpc_requests(model, instances, in_process.dtypes)
        grpc_diffs = _grpc_diffs(model, grpc_port, instances[:5], grpc_requests[:5], stable,
                                 in_process)

        # Warm-up of both paths, then alternating rounds: in process vs. 1 client.
        InProcess.time_calls(in_process.savedmodel, instances, 100)
        InProcess.time_calls(in_process.savedmodel_json, bodies, 100)
        _load(port, requests, 1, count=100, warmup_seconds=0)
        pooled = {'savedmodel': [], 'savedmodel_json': [], 'server_1_client': []}
        per_round = []
        for _ in range(plan['rounds']):
            a = InProcess.time_calls(in_process.savedmodel, instances, plan['calls'])
            b = InProcess.time_calls(in_process.savedmodel_json, bodies, plan['calls'])
            c = _load(port, requests, 1, count=plan['calls'], warmup_seconds=0)
            if c['failures']:
                raise RuntimeError('requests failed: %s' % c['failures'][:3])
            pooled['savedmodel'] += a
            pooled['savedmodel_json'] += b
            pooled['server_1_client'] += c['latencies']
            per_round.append({
                'savedmodel_p50_ms': round(_percentile(a, 50) * 1e3, 3),
                'savedmodel_json_p50_ms': round(_percentile(b, 50) * 1e3, 3),
                'server_p50_ms': round(_percentile(c['latencies'], 50) * 1e3, 3),
                'server_cpu_ms_per_request': c['server_cpu_ms_per_request']})
        inproc = {k: _stats_ms(v) for k, v in pooled.items()}
        for k in ('savedmodel', 'savedmodel_json'):
            inproc[k]['calls_per_s'] = round(1e3 / inproc[k]['mean_ms'], 1)
        server_c1 = inproc.pop('server_1_client')
        overhead_p50 = server_c1['p50_ms'] - inproc['savedmodel']['p50_ms']
        http_p50 = server_c1['p50_ms'] - inproc['savedmodel_json']['p50_ms']
        overhead_rounds = [r['server_p50_ms'] - r['savedmodel_p50_ms'] for r in per_round]

        # Throughput and latency by concurrency: REST, then gRPC at the same level.
        levels, grpc_levels = [], []
        for n in plan['concurrency']:
            res = _load(port, requests, n, seconds=plan['seconds'],
                        max_requests=plan['max_requests'], cpu=server.cpu_seconds)
            if not res['latencies']:
                raise RuntimeError('no request succeeded at concurrency %d: %s'
                                   % (n, res['failures'][:3]))
            levels.append(dict(_stats_ms(res['latencies']), concurrency=n, rows_per_request=1,
                               requests=res['requests'], errors=len(res['failures']),
                               seconds=round(res['wall_s'], 2),
                               throughput_rps=round(res['requests'] / res['wall_s'], 1),
                               server_cpu_ms_per_request=res['server_cpu_ms_per_request'],
                               versions=res['versions']))
            grpc_levels.append(_grpc_level(grpc_port, grpc_requests, n, plan, server))
        extra = []
        if plan['batch']:
            rows, n = plan['batch']
            batch_requests = [Connection.post_bytes('127.0.0.1', port, path, json.dumps(
                {'signature_name': SIGNATURE,
                 'instances': [instances[(i + j) % len(instances)] for j in range(rows)]}
            ).encode()) for i in range(0, len(instances), 7)]
            res = _load(port, batch_requests, n, seconds=plan['seconds'],
                        max_requests=plan['max_requests'], cpu=server.cpu_seconds)
            extra.append(dict(_stats_ms(res['latencies']), concurrency=n, rows_per_request=rows,
                              requests=res['requests'], errors=len(res['failures']),
                              seconds=round(res['wall_s'], 2),
                              throughput_rps=round(res['requests'] / res['wall_s'], 1),
                              server_cpu_ms_per_request=res['server_cpu_ms_per_request'],
                              mode='split'))
        # `serve --upstream` in front of this server, against calling it directly.
        from bench import router_bench
        upstream = router_bench.measure(root, model, served, port, bodies, plan, work)
    finally:
        server.stop()

    if plan['shadow'] and rollout.canary_version is not None:
        shadow = ServerProcess(root, os.path.join(work, 'serving-bench-shadow.log'),
                               '--mode', 'shadow').start()
        try:
            shadow.wait_ready(model, served)
            shadow_requests = [Connection.post_bytes('127.0.0.1', shadow.port, path, b)
                               for b in bodies]
            res = _load(shadow.port, shadow_requests, 4, seconds=plan['seconds'],
                        max_requests=plan['max_requests'], cpu=shadow.cpu_seconds)
            conn = Connection('127.0.0.1', shadow.port)
            try:
                _, _, body = conn.get('/monitoring/snapshot')
            finally:
                conn.close()
            mirrored = (json.loads(body)['models'][model]['window'] or {}).get('shadow', {})
            extra.append(dict(_stats_ms(res['latencies']), concurrency=4, rows_per_request=1,
                              requests=res['requests'], errors=len(res['failures']),
                              seconds=round(res['wall_s'], 2),
                              throughput_rps=round(res['requests'] / res['wall_s'], 1),
                              server_cpu_ms_per_request=res['server_cpu_ms_per_request'],
                              mode='shadow', shadow_compared_rows=mirrored.get('comparisons'),
                              shadow_dropped=mirrored.get('dropped')))
        finally:
            shadow.stop()

    load_after = os.getloadavg()
    target_met = overhead_p50 <= TARGET_OVERHEAD_P50_MS
    result = {
        'model': model, 'served_versions': served, 'stable': stable,
        'canary': rollout.canary_version, 'canary_traffic_percent':
            rollout.canary_traffic_percent if rollout.canary_version is not None else 0,
        'signature': SIGNATURE, 'rows_per_request': 1, 'request_rows': len(instances),
        'quick': quick, 'rounds': per_round, 'setup_s': round(setup_s, 1),
        'measure_s': round(time.perf_counter() - started - setup_s, 1),
        'loadavg_1m': [round(load_before[0], 2), round(load_after[0], 2)],
        'answers_max_abs_diff': max(diffs),
        'grpc_answers_max_abs_diff': max(grpc_diffs), 'grpc': grpc_levels,
        'in_process': inproc, 'server_1_client': server_c1,
        'concurrency': levels, 'extra': extra,
        'overhead_p50_ms': round(overhead_p50, 3),
        'overhead_p50_ms_rounds_median': round(statistics.median(overhead_rounds), 3),
        'http_routing_p50_ms': round(http_p50, 3),
        'server_vs_in_process_p50_ratio': round(server_c1['p50_ms']
                                                / inproc['savedmodel']['p50_ms'], 2),
        'target_overhead_p50_ms': TARGET_OVERHEAD_P50_MS,
        'target_met': target_met,
    }
    result['upstream_router'] = upstream
    result['markdown'] = _markdown(result) + router_bench.markdown(upstream)
    return result


def _markdown(r):
    sm, sj, s1 = r['in_process']['savedmodel'], r['in_process']['savedmodel_json'], \
        r['server_1_client']
    split = ('stable v%s, canary v%s at %d%%' % (r['stable'], r['canary'],
                                               r['canary_traffic_percent'])
             if r['canary'] is not None else 'stable v%s only' % r['stable'])
    lines = [
        '`POST /v1/models/%s:predict` (routed: %s), signature `%s`, 1 row per request '
        '(the same %d span-2 rows for every path). Server: `tfx-canary serve` in its own '
        'process; clients: threads of the bench process, one keep-alive HTTP/1.1 connection '
        'each. Load average %.1f → %.1f.' % (r['model'], split, r['signature'],
                                            r['request_rows'], r['loadavg_1m'][0],
                                            r['loadavg_1m'][1]),
        '',
        '| path | p50 ms | p99 ms | throughput | server CPU ms/request |',
        '|---|---|---|---|---|',
        _row_ms('in process: SavedModel `%s` signature (stable v%s), '
                '`fn(**{feature: tf.constant([value])})`' % (r['signature'], r['stable']),
                sm, sm['calls_per_s']),
        _row_ms("in process: the server's work without HTTP (JSON body → `serving.codec` "
                '→ `ModelVersion.predict` → JSON answer)', sj, sj['calls_per_s']),
        _row_ms('server, 1 client (in rounds alternating with the two rows above)', s1),
    ]
    for level in r['concurrency']:
        lines.append(_row_ms('server, %d client%s' % (level['concurrency'],
                                                     's' * (level['concurrency'] > 1)),
                             level, level['throughput_rps'], level['server_cpu_ms_per_request']))
    for e in r['extra']:
        if e['mode'] == 'shadow':
            name = ('server `--mode shadow`, %d clients (the canary runs a copy of every '
                    'request: %s rows compared, %s copies dropped)'
                    % (e['concurrency'], e.get('shadow_compared_rows'), e.get('shadow_dropped')))
        else:
            name = 'server, %d clients, %d rows/request (%.0f rows/s)' % (
                e['concurrency'], e['rows_per_request'],
                e['throughput_rps'] * e['rows_per_request'])
        lines.append(_row_ms(name, e, e['throughput_rps'], e['server_cpu_ms_per_request']))
    lines += [
        '',
        '**Router overhead** (server with 1 client − SavedModel in process, p50): '
        '**%.2f ms** (%.2f× the in-process p50; median of %d rounds %.2f ms); of which HTTP + '
        'routing + metrics (server − in process with JSON): %.2f ms. Target ≤ %.1f ms: '
        '**%s**.' % (r['overhead_p50_ms'], r['server_vs_in_process_p50_ratio'],
                     len(r['rounds']), r['overhead_p50_ms_rounds_median'],
                     r['http_routing_p50_ms'], r['target_overhead_p50_ms'],
                     'met' if r['target_met'] else 'NOT met'),
        '',
        '`ModelVersion.predict` calls the signature\'s flat function once `serving.codec` has '
        'checked the inputs\' names, dtypes and shapes, skipping TensorFlow\'s per-call '
        'argument binding (~0.2 ms), so the second row can be faster than the first: the '
        'HTTP + routing figure is the server against its own in-process path.',
    ]
    return lines + _grpc_markdown(r)


def main(argv=None):
    import argparse
    import tempfile
    p = argparse.ArgumentParser(prog='python -m bench.serving_bench',
                                description='The serving part of `make bench` on its own.')
    p.add_argument('--quick', action='store_true')
    p.add_argument('--serving-root', help='staged models (default: run the pipeline first)')
    p.add_argument('--work', help='scratch folder (default: a temp dir)')
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix='tfx-canary-serving-bench-')
    import warnings
    warnings.filterwarnings('ignore')
    result = run(work, quick=args.quick, serving_root=args.serving_root)
    print('\n'.join(result['markdown']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({k: v for k, v in result.items() if k != 'markdown'}, f, indent=2)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
