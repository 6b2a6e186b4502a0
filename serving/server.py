"""`tfx-canary serve`: TF Serving's REST API over the staged versions, with the
rollout's traffic split (or shadow mode), metrics and request capture.

Endpoints (TF Serving's, same bodies and status codes):

    GET  /v1/models/NAME[/versions/N | /labels/L]            model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signatures
    POST /v1/models/NAME:predict                              routed by the rollout
    POST /v1/models/NAME/versions/N:predict                   one version
    POST /v1/models/NAME/labels/{stable,canary}:predict       one role

and ours: GET /metrics (also at TF Serving's /monitoring/prometheus/metrics),
GET /monitoring/snapshot (the JSON `rollout analyze` reads) and
POST /v1/models/NAME:feedback (ground truth for captured rows, into the label
log: serving/labels.py; like Seldon's feedback API, not TF Serving's).

Every predict response carries X-Request-Id: the client's own (that header,
or a top-level `request_id` field, which TF Serving would ignore), else one
made here. Captured rows keep it, and labels name rows by it.

Everything CPU-bound for a request (JSON, tensors, the model) runs in one
call of `ModelServer.predict_sync`: on a worker thread (one executor hop), or,
when no other predict is running and the body is small, directly on the event
loop, which saves the two thread wake-ups (~0.1 ms) of the hop when the server
is otherwise idle. Shadow calls run on their own small thread limiter so they
cannot starve client requests, and are dropped (and counted) rather than
queued without bound.

With ServerConfig.grpc_port, TF Serving's gRPC API (serving/grpc_api.py) runs
on the same event loop and shares the predict path after parsing: REST's
predict_sync and gRPC's Predict each turn their request into a PredictCall
for `predict_call` (route, decode, model, encode, metrics), and both go
through after_predict (shadow, capture, live quality).

`:predict` requests take a plain-ASGI path (no Starlette request/response
objects or middleware: same status, headers and body); everything else goes
through the Starlette application.

Request bodies are limited to `ServerConfig.max_body_bytes`: a larger one is
answered 413 (TF Serving's `{"error": ...}` body) as soon as that is known,
from Content-Length before any of the body is read, or while counting the
chunks of one sent without it, and the connection is closed rather than the
rest read. Bodies that do not parse (nesting too deep included) are 400s:
see codec.parse_request.
"""
import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import re
import signal
import socket
import threading
import time

import anyio
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from common.errors import TfxCanaryError
from rollout import fsutil
from rollout import metrics_snapshot
from serving import codec, labels, quality, routing
from serving.capture import CaptureBatch, feature_rows, new_request_id
from serving.errors import ServingError, invalid_argument, not_found, payload_too_large
from serving.metrics import ServingMetrics
from serving.models import ModelRegistry, ModelVersion

logger = logging.getLogger(__name__)

JSON = 'application/json'
# TF Serving's own path grammar (model_servers/http_rest_api_util.cc),
# case-insensitive like its RE2 patterns.
_PREDICT_RE = re.compile(
    r'/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
    r':(classify|regress|predict)', re.IGNORECASE)
_STATUS_RE = re.compile(
    r'/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?',
    re.IGNORECASE)
_FEEDBACK_RE = re.compile(r'/v1/models/([^/:]+):feedback', re.IGNORECASE)
REQUEST_ID_HEADER = b'x-request-id'
REQUEST_ID_FIELD = 'request_id'
PREDICT_OUTPUT = 'probabilities'
DEFAULT_MAX_BODY_BYTES = 16 * 2 ** 20


@dataclasses.dataclass
class ServerConfig:
    serving_root: str
    model_names: tuple = None             # None: every model with a rollout.json
    mode: str = routing.SPLIT
    sticky_header: str = 'X-Request-Key'
    sticky_field: str = 'request_key'
    poll_seconds: float = 1.0
    shadow_threshold: float = 0.5
    shadow_max_pending: int = 256
    shadow_threads: int = 2
    snapshot_seconds: float = 5.0
    snapshot_path: str = None             # None: <serving_root>/<model>/serving-metrics.json
    capture: object = None                # a capture.CaptureWriter, or None
    feedback: object = None               # a labels.LabelLog (POST :feedback), or None
    version_headers: bool = True          # X-Model-Version / X-Model-Role on predict
    # Worker threads for predict calls (None: one per CPU). More calls at once
    # than cores only makes them contend: on 2 cores, 2 threads serve 16
    # concurrent clients ~20% faster than 40, with a lower p99.
    predict_threads: int = None
    # A predict whose body is at most this many bytes runs on the event loop
    # when no other predict is running (0: always on a worker thread).
    inline_max_bytes: int = 4096
    # The largest request body accepted; a larger one is a 413, refused
    # before it is read in full. 16 MiB is ~40,000 taxi rows in one request.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Live quality (serving/quality.py): labels sent to :feedback for rows this
    # server answered are derived by the serving version's own transform
    # signature and read at label_key (pipeline.configs.PipelineConfig's
    # transform_signature and label_key; the CLI passes them). None: off.
    label_key: str = None
    transform_signature: str = None
    live_max_rows: int = quality.DEFAULT_MAX_ROWS
    # TF Serving's gRPC API (serving/grpc_api.py) on this port, beside the REST
    # one (None: off; 0: a free port). on_grpc_listening(host, port) is called
    # once it is bound, e.g. to print the port 0 picked.
    grpc_host: str = '127.0.0.1'
    grpc_port: int = None
    on_grpc_listening: object = None


@dataclasses.dataclass
class PredictCall:
    """One predict request, whatever its protocol: where it goes and how its tensors are read.

    decode(specs) -> {input alias: ndarray} checked against the answering
    version's signature inputs (the version is only known after routing);
    encode(outputs, version) -> the protocol's answer (JSON bytes, a proto).
    """
    name: str
    version: int
    label: str
    key: str                   # the sticky routing key, or None
    signature_name: str
    decode: object
    encode: object


@dataclasses.dataclass
class Outcome:
    """What a predict call produced, for the async side (metrics, shadow, capture)."""
    status: int
    body: bytes
    model: object = None
    role: str = None
    route: str = None
    seconds: float = 0.0
    probabilities: list = None
    call: PredictCall = None
    error: ServingError = None        # why the call failed (its code: gRPC's status)
    arrays: dict = None
    specs: dict = None
    plan: object = None
    request_id: str = None


def client_request_id(header_value, document=None, where='X-Request-Id / request_id'):
    """The request id a client sent (header or gRPC metadata first, then the
    body field), checked; None if it sent none. `where` names it in errors."""
    value = header_value
    if value is None and isinstance(document, dict):
        value = document.get(REQUEST_ID_FIELD)
    if value is None:
        return None
    try:
        return labels.check_request_id(value, where)
    except labels.LabelError as e:
        raise invalid_argument(str(e)) from None


def _once(rows):
    """`rows` (a deferred callable) computed at most once, for capture and live quality."""
    lock = threading.Lock()
    done = []

    def cached():
        with lock:
            if not done:
                done.append(rows())
            return done[0]
    return cached


def _row_count(arrays):
    """Rows in a request's inputs (the first dimension they share), else 0."""
    sizes = {a.shape[0] for a in (arrays or {}).values() if getattr(a, 'ndim', 0) >= 1}
    return sizes.pop() if len(sizes) == 1 else 0


def _probabilities(outputs):
    """One probability per row, if the model has one scalar output per row."""
    array = outputs.get(PREDICT_OUTPUT)
    if array is None and len(outputs) == 1:
        array = next(iter(outputs.values()))
    if array is None or array.ndim == 0:
        return []
    rows = array.reshape(array.shape[0], -1)
    if rows.shape[1] != 1 or rows.dtype.kind != 'f':
        return []
    return [float(v) for v in rows[:, 0]]


class ModelServer:
    """The application state: models, metrics, capture, shadow bookkeeping."""

    def __init__(self, config, loader=ModelVersion):
        if config.mode not in routing.MODES:
            raise ValueError('mode must be one of %s' % ', '.join(routing.MODES))
        if not (isinstance(config.max_body_bytes, int) and config.max_body_bytes >= 1):
            raise ValueError('max_body_bytes must be a positive integer, got %r'
                             % (config.max_body_bytes,))
        self.config = config
        self.metrics = ServingMetrics(config.mode, config.shadow_threshold)
        self.registry = ModelRegistry(config.serving_root, config.model_names,
                                      config.poll_seconds, loader,
                                      on_change=self.metrics.rollout_changed)
        self.capture = config.capture
        self.feedback = config.feedback
        self.live = (quality.LiveJoin(self.metrics, self.registry, config.label_key,
                                      config.transform_signature, config.live_max_rows)
                     if config.label_key and config.transform_signature else None)
        self._shadow_pending = 0
        self._predicting = 0              # predict calls running (event loop's view)
        threads = config.predict_threads or os.cpu_count() or 1
        self._executor = concurrent.futures.ThreadPoolExecutor(max(1, threads),
                                                               thread_name_prefix='predict')
        self._shadow_tasks = set()
        self._shadow_limiter = None
        self._stop = threading.Event()
        self._snapshot_thread = None
        self._snapshot_failed = set()
        self.grpc = None                  # the gRPC server, when config.grpc_port is set

    # ------------------------------------------------------------ lifecycle

    def start(self):
        self.registry.start()
        self.follow_labels()   # from the log's end: older labels are for earlier servers
        self._snapshot_thread = threading.Thread(target=self._snapshot_loop,
                                                 name='metrics-snapshot', daemon=True)
        self._snapshot_thread.start()

    async def start_grpc(self):
        """Starts TF Serving's gRPC API on this event loop, if config.grpc_port is set."""
        if self.config.grpc_port is None:
            return
        from serving import grpc_api   # grpcio and TF Serving's protos only when asked for
        self.grpc = await grpc_api.start(self, self.config.grpc_host, self.config.grpc_port)
        if self.config.on_grpc_listening is not None:
            self.config.on_grpc_listening(self.config.grpc_host, self.grpc.port)

    async def stop(self):
        if self.grpc is not None:   # calls in flight finish; their shadow copies are below
            await self.grpc.stop()
        # Let mirrored calls finish (bounded): their results are metrics.
        if self._shadow_tasks:
            await asyncio.wait(set(self._shadow_tasks), timeout=10)
        self._stop.set()
        if self._snapshot_thread is not None:
            self._snapshot_thread.join(timeout=10)
        self.registry.stop()
        self._executor.shutdown(wait=False)
        if self.capture is not None:
            await anyio.to_thread.run_sync(self.capture.close)
        self.write_snapshots()

    def snapshot_path(self, model_name):
        return self.config.snapshot_path or metrics_snapshot.snapshot_path(
            self.registry.serving_root, model_name)

    def write_snapshots(self):
        """Writes the metrics snapshot file(s) `rollout analyze` reads, atomically.

        By default one per model, next to its rollout.json; with
        config.snapshot_path, one file holding every model.
        """
        snapshot = self.metrics.snapshot()
        if self.config.snapshot_path:
            targets = [(self.config.snapshot_path, snapshot)]
        else:
            targets = [(self.snapshot_path(name),
                        dict(snapshot, models={name: snapshot['models'].get(name)}))
                       for name in self.registry.models]
        for path, one in targets:
            try:
                fsutil.atomic_write_text(path, json.dumps(one, indent=1) + '\n')
                self._snapshot_failed.discard(path)
            except OSError as e:
                if path not in self._snapshot_failed:  # once, not every few seconds
                    logger.warning('cannot write metrics snapshot %s: %s (rollout analyze '
                                   'can read --metrics http://HOST:PORT instead)', path, e)
                self._snapshot_failed.add(path)

    def _snapshot_loop(self):
        while not self._stop.wait(self.config.snapshot_seconds):
            self.follow_labels()
            self.write_snapshots()

    def follow_labels(self):
        """Live quality of bulk labels appended to the log while serving (snapshot thread)."""
        log, live = self.feedback, self.live
        if log is None or live is None:
            return
        try:
            live.follow(log.path, log.spec.name)
        except Exception:  # noqa: BLE001  metrics only: never stops the snapshots
            logger.exception('live quality: following %s failed', log.path)

    # ------------------------------------------------------------ predict

    async def predict(self, name, version, label, body, header_key, request_id=None):
        """A REST predict (predict_sync) from the event loop: run_predict."""
        return await self.run_predict(len(body), self.predict_sync, name, version, label, body,
                                      header_key, request_id)

    async def run_predict(self, size, function, *args):
        """function(*args) from the event loop: inline when alone and small, else on a thread.

        Inline only when this is the one predict in progress: requests that
        arrived with it get one loop turn to register first, so under
        concurrent load every call still goes to the worker threads (TF runs
        them in parallel there) and the loop is never held by more than one
        small call at a time. `size`: the request's bytes.
        """
        self._predicting += 1
        try:
            inline = False
            if size <= self.config.inline_max_bytes:
                await asyncio.sleep(0)
                inline = self._predicting == 1
            if inline:
                return function(*args)
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, function, *args)
        finally:
            self._predicting -= 1

    def predict_sync(self, name, version, label, body, header_key, request_id=None):
        """Handles one REST predict call end to end (on a worker thread, or the loop: predict()).

        `request_id`: the X-Request-Id header's value, if the client sent one.
        """
        def prepare(outcome):
            request, outcome.request_id, key = self.parse_rest(body, header_key, request_id)

            def encode(outputs, _version):
                return codec.dumps(codec.encode_outputs(outputs, request.format)).encode()
            return PredictCall(name, version, label, key, request.signature_name,
                               functools.partial(codec.decode_inputs, request), encode)

        outcome = self.predict_call(prepare)
        if outcome.error is not None:
            outcome.body = codec.error_body(outcome.error.message).encode()
        return outcome

    def parse_rest(self, body, header_key, request_id):
        """(request, request id, sticky key) of a REST predict body: the key is the
        sticky header's, else the body's sticky field."""
        request = codec.parse_request(body)
        key = header_key
        if key is None and self.config.sticky_field:
            field = request.document.get(self.config.sticky_field)
            key = None if field is None else str(field)
        return request, client_request_id(request_id, request.document), key

    def _route(self, plan, call):
        """(version answering `call`, route name): by version, by label, else the split."""
        if call.version is not None:
            return plan.by_version(call.version), 'version'
        if call.label is not None:
            return plan.by_label(call.label), 'label'
        target, _ = routing.choose(plan, call.key, self.config.mode)
        if target is None:
            raise not_found('Servable not found for request: Latest(%s)' % call.name)
        return target, self.config.mode

    def predict_call(self, prepare):
        """The predict path every protocol shares: route, decode, model, encode, metrics.

        prepare(outcome) parses the protocol's request into a PredictCall (and
        sets outcome.request_id); its errors are answered like any other.
        Returns the Outcome: `body` is encode()'s answer, or `error` is set.
        """
        started = time.perf_counter()
        outcome = Outcome(status=200, body=b'')
        target = None
        try:
            call = outcome.call = prepare(outcome)
            plan = outcome.plan = self.registry.get(call.name).plan
            target, outcome.route = self._route(plan, call)
            outcome.model = target
            outcome.role = plan.role(target.version)
            with target.use():
                specs = target.specs(call.signature_name)
                arrays = call.decode(specs)
                outputs = target.predict(call.signature_name, arrays)
            outcome.body = call.encode(outputs, target.version)
            outcome.probabilities = _probabilities(outputs)
            outcome.arrays, outcome.specs = arrays, specs
        except ServingError as e:
            outcome.error = e
        except Exception as e:  # noqa: BLE001  a bug must be a 500, not a dropped connection
            logger.exception('predict failed')
            outcome.error = ServingError('INTERNAL', 'Internal error: %s: %s'
                                         % (type(e).__name__, e))
        if outcome.error is not None:
            outcome.status = outcome.error.http_status
        if outcome.request_id is None:
            outcome.request_id = new_request_id()
        outcome.seconds = time.perf_counter() - started
        if target is not None:
            self.metrics.predicted(call.name, target.version, outcome.role, outcome.route,
                                   outcome.seconds, outcome.status,
                                   outcome.probabilities or ())
        return outcome

    def shadow_sync(self, name, canary, stable_version, call, arrays, stable_p):
        """Runs the canary on a copy of a request stable answered (worker thread)."""
        started = time.perf_counter()
        status = 200
        try:
            with canary.use():
                specs = canary.specs(call.signature_name)
                if arrays is None or set(specs) != set(arrays):
                    arrays = call.decode(specs)
                outputs = canary.predict(call.signature_name, arrays)
            canary_p = _probabilities(outputs)
        except ServingError as e:
            status = e.http_status
        except Exception:  # noqa: BLE001
            logger.exception('shadow predict failed')
            status = 500
        self.metrics.predicted(name, canary.version, 'canary', routing.SHADOW,
                               time.perf_counter() - started, status,
                               canary_p if status == 200 else ())
        if status != 200:
            self.metrics.shadow_failed(name)
            return
        self.metrics.shadow_compared(name, stable_version, canary.version, stable_p, canary_p)

    def after_predict(self, name, outcome):
        """Schedules the shadow copy and the capture; never delays the response."""
        if outcome.status != 200:
            return
        plan = outcome.plan
        if (self.config.mode == routing.SHADOW and outcome.route == routing.SHADOW
                and plan.canary is not None and plan.canary in plan.versions):
            if self._shadow_pending >= self.config.shadow_max_pending:
                self.metrics.shadow_skipped(name)
            else:
                self._shadow_pending += 1
                task = asyncio.get_running_loop().create_task(self._shadow(
                    name, plan.versions[plan.canary], outcome))
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)
        capture = self.capture
        if capture is not None and capture.sampled():
            rows = feature_rows(outcome.arrays, outcome.specs)
            live = self.live if self.feedback is not None else None
            if live is not None:   # the writer thread's parse, reused by the join
                rows = _once(rows)
            queued = capture.submit(CaptureBatch(
                rows=rows,
                request_id=outcome.request_id, served_at=time.time(), model=name,
                version=outcome.model.version, role=outcome.role,
                predictions=outcome.probabilities or []))
            if queued and self.feedback is not None and self.feedback.index is not None:
                # Known from now on, so a label sent right after its answer is
                # accepted before the row reaches a published part.
                self.feedback.index.add(outcome.request_id, _row_count(outcome.arrays))
            if queued and live is not None:
                live.served(outcome.request_id, name, outcome.model.version,
                            outcome.role, rows, outcome.probabilities or [])

    def feedback_sync(self, parsed, name):
        """Appends a feedback batch to the label log, then joins it into live quality."""
        firsts = []
        result = self.feedback.append(parsed, 'feedback', name,
                                      on_first=firsts.extend if self.live else None)
        if self.live is not None and firsts:
            try:
                self.live.labeled(name, firsts, self.feedback.spec.name)
            except Exception:  # noqa: BLE001  the labels are durable: never fail the call
                logger.exception('live quality: joining labels failed')
        return result

    async def _shadow(self, name, canary, outcome):
        try:
            if self._shadow_limiter is None:
                self._shadow_limiter = anyio.CapacityLimiter(self.config.shadow_threads)
            await anyio.to_thread.run_sync(
                self.shadow_sync, name, canary, outcome.model.version, outcome.call,
                outcome.arrays, outcome.probabilities or [], limiter=self._shadow_limiter)
        finally:
            self._shadow_pending -= 1

    # ------------------------------------------------------------ status

    def status_json(self, name, version, label):
        return {'model_version_status': [
            {'version': str(v), 'state': state,
             'status': {'error_code': 'OK', 'error_message': ''}}
            for v, state in self.version_states(name, version, label)]}

    def version_states(self, name, version, label):
        """[(version, TF Serving state name)], newest first: GetModelStatus for REST and gRPC."""
        served = self.registry.models.get(name)
        if served is None:
            raise not_found('Could not find any versions of model %s' % name)
        states = served.version_states()
        if label is not None:
            version = served.plan.by_label(label).version
        if version is not None:
            if version not in states:
                raise not_found('Could not find version %d of model %s' % (version, name))
            states = {version: states[version]}
        if not states:
            raise not_found('Could not find any versions of model %s' % name)
        return sorted(states.items(), reverse=True)

    def metadata_json(self, name, version, label):
        target = self.metadata_target(name, version, label)
        return {'model_spec': {'name': name, 'signature_name': '',
                               'version': str(target.version)},
                'metadata': target.metadata()}

    def metadata_target(self, name, version, label):
        """The version GetModelMetadata describes (REST and gRPC)."""
        served = self.registry.models.get(name)
        plan = served.plan if served is not None else None
        if plan is None:
            raise not_found('Servable not found for request: Latest(%s)' % name)
        if version is not None:
            target = plan.by_version(version)
        elif label is not None:
            target = plan.by_label(label)
        else:
            # TF Serving answers for the latest version; here the version a
            # client is most likely to get is stable.
            target = plan.versions.get(plan.stable)
            if target is None:
                raise not_found('Servable not found for request: Latest(%s)' % name)
        return target


# ---------------------------------------------------------------- HTTP layer

def _json_response(status, obj=None, body=None, headers=None):
    if body is None:
        body = codec.dumps(obj).encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _error_response(error):
    # After a 413 the rest of the body is still unread: close the connection
    # instead of reading (and discarding) it to reach the next request.
    headers = {'connection': 'close'} if error.http_status == 413 else None
    return _json_response(error.http_status, body=codec.error_body(error.message).encode(),
                          headers=headers)


def _declared_length(scope):
    """The request's Content-Length, or None (absent: chunked, or no body)."""
    for key, value in scope['headers']:
        if key == b'content-length':
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses these before the app sees them
    return None


def _spec(match):
    """(model name, version or None, label or None) of a matched /v1/models path."""
    name, version, label = match.group(1), match.group(2), match.group(3)
    if version is not None:
        try:
            version = int(version)
        except ValueError:
            raise invalid_argument('Failed to convert version: %s to numeric.'
                                   % version) from None
    return name, version, label


def _unsupported(match):
    # `:predict` never gets here: _Api.app answers it before Starlette.
    _spec(match)
    raise ServingError('UNIMPLEMENTED', '%s is not supported by tfx-canary serve '
                       '(the model has no %s signature): use :predict'
                       % (match.group(4), match.group(4)))


def _too_large(what, limit):
    return payload_too_large('Request body too large: %s the limit of %d bytes '
                             '(tfx-canary serve --max-body-bytes)' % (what, limit))


async def _read_body(receive, max_body):
    """The whole request body, or None if the client went away before sending it."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message['type'] != 'http.request':
            return None
        chunk = message.get('body', b'')
        size += len(chunk)
        if size > max_body:  # a chunked body (app() checked any Content-Length)
            raise _too_large('more than', max_body)
        chunks.append(chunk)
        if not message.get('more_body', False):
            return chunks[0] if len(chunks) == 1 else b''.join(chunks)


class _Api:
    """The HTTP handlers around one ModelServer: Starlette routes and the plain-ASGI `:predict`."""

    def __init__(self, server):
        self.server = server
        self.sticky = (server.config.sticky_header.lower().encode('latin-1')
                       if server.config.sticky_header else None)
        self.max_body = server.config.max_body_bytes

    # ------------------------------------------------------------ Starlette routes

    async def v1(self, request):
        path = request.url.path
        method = request.method
        api = 'other'
        try:
            if method == 'POST':
                match = _FEEDBACK_RE.fullmatch(path)
                if match:
                    api = 'feedback'
                    return await self.feedback(request, match.group(1))
                match = _PREDICT_RE.fullmatch(path)
                if match:
                    api = match.group(4).lower()
                    _unsupported(match)
            elif method == 'GET':
                match = _STATUS_RE.fullmatch(path)
                if match:
                    api = 'metadata' if match.group(4) else 'status'
                    return self.status(match)
            raise invalid_argument('Malformed request: %s %s' % (method, path))
        except ServingError as e:
            self.server.metrics.rest(api, e.http_status)
            return _error_response(e)

    def status(self, match):
        name, version, label = _spec(match)
        if not name:
            raise invalid_argument('Missing model name in request.')
        if match.group(4):
            result = self.server.metadata_json(name, version, label)
            api = 'metadata'
        else:
            result = self.server.status_json(name, version, label)
            api = 'status'
        self.server.metrics.rest(api, 200)
        return _json_response(200, result)

    async def feedback(self, request, name):
        """POST /v1/models/NAME:feedback: labels for captured rows, fsynced before the answer."""
        log = self.server.feedback
        if log is None:
            raise ServingError('FAILED_PRECONDITION', 'This server keeps no labels: start '
                               '`tfx-canary serve` with --capture-rate above 0')
        if name not in self.server.registry.models:
            raise not_found('Could not find any versions of model %s' % name)
        body = await _read_body(request.receive, self.max_body)
        try:
            document = json.loads(body) if body else None
        except ValueError as e:  # not JSON, not UTF-8
            raise invalid_argument('JSON Parse error: %s' % e) from None
        except RecursionError:
            raise invalid_argument('JSON Parse error: The document is nested too deeply') \
                from None
        try:
            parsed = labels.labels_from_json(document, log.spec)
        except labels.LabelError as e:
            raise invalid_argument(str(e)) from None
        try:
            result = await anyio.to_thread.run_sync(self.server.feedback_sync, parsed, name)
        except (OSError, TfxCanaryError) as e:  # a full disk, a lock held too long
            logger.error('feedback: cannot write %s: %s', log.path, e)
            raise ServingError('UNAVAILABLE', 'Cannot write the label log: %s; nothing was '
                               'recorded: send the labels again' % e) from None
        self.server.metrics.rest('feedback', 200)
        return _json_response(200, result.to_json())

    async def prometheus(self, request):
        return Response(self.server.metrics.prometheus_text(),
                        media_type='text/plain; version=0.0.4; charset=utf-8')

    async def snapshot(self, request):
        return _json_response(200, self.server.metrics.snapshot())

    async def not_found(self, request, exc):
        return _json_response(404, {'error': 'Not found: %s %s (the REST API is under /v1/)'
                                             % (request.method, request.url.path)})

    async def lifespan(self, app):
        await anyio.to_thread.run_sync(self.server.start)
        await self.server.start_grpc()
        try:
            yield
        finally:
            await self.server.stop()

    def starlette(self):
        routes = [
            # Every method: TF Serving answers any /v1/ request itself ("Malformed
            # request: DELETE ..."), never with a bare 405.
            Route('/v1/{rest:path}', self.v1,
                  methods=['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']),
            Route('/metrics', self.prometheus),
            Route('/monitoring/prometheus/metrics', self.prometheus),
            Route(metrics_snapshot.SNAPSHOT_URL_PATH, self.snapshot),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan,
                         exception_handlers={404: self.not_found, 405: self.not_found})

    # ------------------------------------------------------------ plain-ASGI :predict

    def _header_key(self, scope):
        if self.sticky is not None:
            for key, value in scope['headers']:
                if key == self.sticky:
                    return value.decode('latin-1')
        return None

    @staticmethod
    def _request_id(scope):
        for key, value in scope['headers']:
            if key == REQUEST_ID_HEADER:
                return value.decode('latin-1')
        return None

    async def fast_predict(self, scope, receive, send, match):
        """A `:predict` call as plain ASGI: Starlette's answer without its per-request objects."""
        server = self.server
        name, version, label = _spec(match)
        body = await _read_body(receive, self.max_body)
        if body is None:
            return  # The client went away before sending its body: nobody to answer.
        outcome = await server.predict(name, version, label, body, self._header_key(scope),
                                       self._request_id(scope))
        server.metrics.rest('predict', outcome.status)
        server.after_predict(name, outcome)
        # The headers Starlette's Response(media_type=JSON, headers=...) writes.
        headers = []
        if server.config.version_headers and outcome.model is not None:
            headers += [(b'x-model-version', str(outcome.model.version).encode('latin-1')),
                        (b'x-model-role', (outcome.role or '').encode('latin-1'))]
        headers += [(REQUEST_ID_HEADER, outcome.request_id.encode('latin-1')),
                    (b'content-length', str(len(outcome.body)).encode('latin-1')),
                    (b'content-type', b'application/json')]
        await send({'type': 'http.response.start', 'status': outcome.status,
                    'headers': headers})
        await send({'type': 'http.response.body', 'body': outcome.body})


def _predict_match(scope):
    """The `:predict` path match of a POST, else None (everything else goes to Starlette)."""
    if scope['method'] != 'POST':
        return None
    # The path as Starlette's request.url.path gives it to v1().
    path = scope['path'].replace('?', '%3F').replace('#', '%23').replace('\\', '%5C')
    match = _PREDICT_RE.fullmatch(path)
    if match is not None and match.group(4).lower() != 'predict':
        return None
    return match


def create_app(server):
    """The ASGI application around a ModelServer (Starlette, with a plain-ASGI `:predict`)."""
    api = _Api(server)
    starlette = api.starlette()

    async def app(scope, receive, send):
        if scope['type'] == 'http':
            match = _predict_match(scope)
            try:
                # Every route, before any of the body is read: the Starlette
                # routes read none, but an oversized one is refused there too
                # rather than left for the HTTP server to drain after the answer.
                declared = _declared_length(scope)
                if declared is not None and declared > api.max_body:
                    raise _too_large('Content-Length %d is more than' % declared, api.max_body)
                if match is not None:
                    await api.fast_predict(scope, receive, send, match)
                    return
            except ServingError as e:  # as v1() answers it
                server.metrics.rest('predict' if match is not None else 'other', e.http_status)
                await _error_response(e)(scope, receive, send)
                return
        await starlette(scope, receive, send)

    app.starlette = starlette
    return app


# ---------------------------------------------------------------- running

def bind_socket(host, port):
    """A listening socket (port 0: a free port), bound before uvicorn starts."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets
    # whose proto is IPPROTO_TCP, and without it Nagle + delayed ACKs add
    # ~40 ms to every response written in two parts (headers, body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app, graceful_seconds=30):
    import uvicorn
    config = uvicorn.Config(app, log_level='warning', access_log=False, lifespan='on',
                            timeout_graceful_shutdown=graceful_seconds, http='h11',
                            loop='asyncio')
    return uvicorn.Server(config)


def serve_forever(server, host, port):
    """Runs in the foreground until SIGINT/SIGTERM (the CLI), then returns.

    Either signal is the normal way to stop: uvicorn finishes the requests in
    flight, the lifespan shutdown publishes capture parts and writes the
    metrics snapshot, and the command exits 0. (uvicorn re-raises the signal
    once it has shut down, under the handlers it found, which would end a
    clean stop by SIGTERM or as a KeyboardInterrupt: the handlers set here
    receive that re-raise. They stop uvicorn too, should a signal come before
    uvicorn has put in its own.)
    """
    sock = bind_socket(host, port)
    uv = uvicorn_server(create_app(server))
    previous = {sig: signal.signal(sig, uv.handle_exit)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uv.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
