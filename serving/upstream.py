"""Router mode: `tfx-canary serve --upstream URL` forwards predicts to another server.

The router reads rollout.json from --serving-root exactly as local mode does
(hot reload, stable/canary/traffic, sticky keys, shadow), but loads no
SavedModel: each routed request goes to the upstream's version label,
`URL/v1/models/NAME/labels/<role>:predict` (a client's `/versions/N` or
`/labels/L` stays as addressed). The upstream is TF Serving (its
models.config, written by rollout/tfserving.py, labels the same versions
`stable` and `canary`), KServe's predictor, or another `tfx-canary serve`.

The seam is the registry's loader: `Upstream` is the `loader` ModelRegistry
calls for each version rollout.json lists, and it returns an `UpstreamVersion`
instead of a loaded SavedModel. So the plan, its hot reload, draining, model
status and routing are local mode's own code. `RouterServer` replaces only
the model call: the client's body is forwarded unchanged, the upstream's
status and body come back unchanged (TF Serving's errors included), and the
answer's probabilities feed the same metrics, shadow comparison and snapshot.
Capture needs the request's tensors, which need the signature's input specs:
they come from the upstream's `/versions/N/metadata` once per version (at
plan load, else on the first captured request) and are cached.

Bounded everywhere: one connection pool per direction (client calls, shadow
copies) with `max_connections`, every call under `timeout` seconds (connect,
read, write and the wait for a pooled connection), and at most
`max_pending` forwards in flight: beyond that a request is answered 503 at
once rather than queued. An unreachable or timed-out upstream is a 503 with
TF Serving's `{"error": ...}` body, counted in
tfx_canary_upstream_errors_total{model, reason}.

Limitation: live quality (labels joined with predictions, serving/quality.py)
needs the version's transform signature in this process, which a router does
not have; labels sent to :feedback are still checked and written to the label
log (and join captured rows at `capture export`).
"""
import asyncio
import dataclasses
import json
import logging
import time
import urllib.parse

import h11
import httpx
from prometheus_client import Counter

from serving import codec, routing
from serving.capture import new_request_id
from serving.errors import ServingError, invalid_argument
from serving.models import CANARY, STABLE, InFlight
from serving.server import ModelServer, Outcome, _probabilities

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 64
REQUEST_ID_HEADER = 'X-Request-Id'


def check_url(url):
    """The upstream's base URL (http[s]://host[:port][/prefix]), or ValueError saying why."""
    if url and not url.isascii():
        raise ValueError('--upstream must be ASCII (an international host name in its '
                         'xn-- form), got %r' % (url,))
    parsed = urllib.parse.urlsplit(url or '')
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise ValueError('--upstream must be an http:// or https:// URL with a host, e.g. '
                         'http://tf-serving:8501, got %r' % (url,))
    if parsed.query or parsed.fragment:
        raise ValueError('--upstream must not have a query or fragment, got %r' % (url,))
    try:
        parsed.port  # noqa: B018  raises ValueError for a port out of range or not a number
    except ValueError:
        raise ValueError('--upstream has an invalid port, e.g. http://tf-serving:8501, got %r'
                         % (url,)) from None
    return url.rstrip('/')


def predict_path(name, version=None, label=None):
    """The upstream's predict path in TF Serving's REST grammar."""
    quoted = urllib.parse.quote(name, safe='')
    if label is not None:
        return '/v1/models/%s/labels/%s:predict' % (quoted, urllib.parse.quote(label, safe=''))
    if version is not None:
        return '/v1/models/%s/versions/%d:predict' % (quoted, version)
    return '/v1/models/%s:predict' % quoted


def metadata_path(name, version):
    return '/v1/models/%s/versions/%d/metadata' % (urllib.parse.quote(name, safe=''), version)


def input_specs(metadata):
    """{signature: {alias: codec.InputSpec}} from a GetModelMetadata JSON answer."""
    signatures = (metadata.get('metadata', {}).get('signature_def', {})
                  .get('signature_def', {}))
    specs = {}
    for signature, definition in signatures.items():
        inputs = {}
        for alias, info in definition.get('inputs', {}).items():
            shape = info.get('tensor_shape', {})
            dims = None if shape.get('unknown_rank') else tuple(
                None if int(d.get('size', -1)) < 0 else int(d['size'])
                for d in shape.get('dim', []))
            inputs[alias] = codec.InputSpec(alias, info.get('dtype', 'DT_INVALID'), dims)
        specs[signature] = inputs
    return specs


def answer_outputs(answer):
    """{output name: ndarray} of a TF Serving predict answer (row or columnar), or {}."""
    import numpy as np
    try:
        document = json.loads(answer)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    values = document.get('predictions', document.get('outputs'))
    if isinstance(values, dict):          # columnar, several outputs
        columns = values
    elif values and isinstance(values, list) and isinstance(values[0], dict):
        columns = {name: [row.get(name) for row in values] for name in values[0]}
    elif isinstance(values, list):        # one output
        columns = {'output': values}
    else:
        return {}
    try:
        return {name: np.asarray(column, dtype=np.float64) for name, column in columns.items()}
    except (TypeError, ValueError):       # strings, ragged: not probabilities
        return {}


class UpstreamError(ServingError):
    """The upstream could not answer (down, slow, too many calls waiting): a 503."""

    def __init__(self, reason, message):
        super().__init__('UNAVAILABLE', message)
        self.reason = reason


class UpstreamVersion(InFlight):
    """One version rollout.json lists, served by the upstream (what ModelVersion is locally)."""

    def __init__(self, upstream, model_name, version, path):
        super().__init__()
        self.upstream = upstream
        self.model_name = model_name
        self.version = version
        self.path = path
        self.load_seconds = 0.0
        self._metadata = None
        self._specs = None

    def warm_up(self):
        """Fetches the signatures now, so the first captured request need not wait."""
        try:
            self.remember(self.upstream.get_sync(metadata_path(self.model_name, self.version)))
        except ServingError as e:
            logger.warning('%s v%d: no signatures from the upstream yet (%s); capture asks '
                           'again on the next request', self.model_name, self.version,
                           e.message)

    def remember(self, metadata):
        self._specs = input_specs(metadata)
        self._metadata = metadata.get('metadata')

    @property
    def has_specs(self):
        return self._specs is not None

    def specs(self, signature_name):
        specs = (self._specs or {}).get(signature_name)
        if specs is None:
            raise invalid_argument('Serving signature name: "%s" not found in signature def'
                                   % signature_name)
        return specs

    def metadata(self):
        if self._metadata is None:
            raise ServingError('UNAVAILABLE', 'the signatures of %s v%d have not been read '
                               'from the upstream yet: ask it directly, or retry'
                               % (self.model_name, self.version))
        return self._metadata



class Upstream:
    """The upstream's REST API: ModelRegistry's loader, and the pooled clients that forward."""

    # ModelRegistry checks a listed version's directory holds a SavedModel
    # only for loaders that read it: the router needs rollout.json alone.
    needs_saved_model = False

    def __init__(self, url, timeout=DEFAULT_TIMEOUT_SECONDS,
                 max_connections=DEFAULT_MAX_CONNECTIONS, max_pending=None):
        self.url = check_url(url)
        self.timeout_seconds = timeout
        self.max_pending = max_pending or 4 * max_connections
        self.pending = 0
        self._max_connections = max_connections
        self._pool = None      # made on the server's event loop (bound to it)
        self._sync = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout),
                                  limits=httpx.Limits(max_connections=max_connections,
                                                      max_keepalive_connections=max_connections))

    def __call__(self, model_name, version, path):
        return UpstreamVersion(self, model_name, version, path)

    def _error(self, error, path):
        if isinstance(error, (httpx.TimeoutException, _Timeout)):
            return UpstreamError('timeout', 'upstream %s did not answer %s within %.1f s '
                                 '(--upstream-timeout)' % (self.url, path, self.timeout_seconds))
        if isinstance(error, (httpx.ConnectError, _ConnectFailed)):
            return UpstreamError('connect', 'upstream %s is unreachable: %s'
                                 % (self.url, error))
        return UpstreamError('transport', 'upstream %s failed on %s: %s: %s'
                             % (self.url, path, type(error).__name__, error))

    async def post(self, path, body, request_id):
        """(status, body bytes) of a POST to the upstream; UpstreamError if there is none."""
        if self.pending >= self.max_pending:
            raise UpstreamError('overloaded', 'upstream %s has %d calls in flight already: '
                                'retry later' % (self.url, self.pending))
        if self._pool is None:
            self._pool = _KeepAlivePool(self.url, self._max_connections)
        self.pending += 1
        try:
            return await self._pool.request(
                'POST', path, [('content-type', 'application/json'),
                               ('x-request-id', request_id)], body, self.timeout_seconds)
        except (_Timeout, OSError, h11.ProtocolError, EOFError) as e:
            raise self._error(e, path) from None
        finally:
            self.pending -= 1

    def post_sync(self, path, body, request_id):
        """post() from a worker thread (shadow copies: their own pool and limiter)."""
        try:
            response = self._sync.post(path, content=body, headers={
                'content-type': 'application/json', REQUEST_ID_HEADER: request_id})
        except httpx.HTTPError as e:
            raise self._error(e, path) from None
        return response.status_code, response.content

    def get_sync(self, path):
        """The JSON of a GET; ServingError with the upstream's status unless it is a 200."""
        try:
            response = self._sync.get(path)
        except httpx.HTTPError as e:
            raise self._error(e, path) from None
        return self._json(response, path)

    async def get(self, path):
        """get_sync() from the event loop, on a thread (rare: a version's signatures)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.get_sync, path)

    @staticmethod
    def _json(response, path):
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            document = {}
        if response.status_code != 200:
            raise ServingError('UNAVAILABLE', 'upstream answered %s with %d: %s'
                               % (path, response.status_code,
                                  document.get('error', response.text[:200])))
        return document

    async def aclose(self):
        if self._pool is not None:
            await self._pool.aclose()
        self._sync.close()


class _Timeout(Exception):
    """A client call ran past --upstream-timeout."""


class _ConnectFailed(OSError):
    """No connection to the upstream could be opened."""


class _KeepAlivePool:
    """At most `size` keep-alive HTTP/1.1 connections to one upstream, for the event loop.

    h11 (the HTTP/1.1 state machine uvicorn and httpcore use) over asyncio
    streams, written for one thing httpcore does not do: a request's head and
    body go out in one write. Every write on loopback wakes the other process,
    and on a busy 2-core machine each cost ~0.45 ms (bench/router_bench.py's
    profile: httpcore's two writes were 1 ms of the router's ~1.6 ms). A
    reused connection the upstream has closed meanwhile is retried once on a
    new one, before anything of the answer was read.
    """

    def __init__(self, url, size):
        parts = urllib.parse.urlsplit(url)
        self._ssl = parts.scheme == 'https'
        self._address = (parts.hostname, parts.port or (443 if self._ssl else 80))
        self._prefix = parts.path.rstrip('/')
        self._host = parts.netloc
        self._idle = []
        self._slots = asyncio.Semaphore(size)

    async def request(self, method, path, headers, body, timeout):
        """(status, body bytes); _Timeout, OSError or h11.ProtocolError if there is none."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        expired = []
        # asyncio.timeout() without needing Python 3.11: cancel this task at the deadline.
        handle = loop.call_later(timeout, lambda: (expired.append(1), task.cancel()))
        try:
            async with self._slots:
                return await self._exchange(method, path, headers, body)
        except asyncio.CancelledError:
            if expired:
                raise _Timeout() from None
            raise
        finally:
            handle.cancel()

    async def _exchange(self, method, path, headers, body):
        connection = self._idle.pop() if self._idle else None
        if connection is not None:
            try:
                return await self._on(connection, method, path, headers, body)
            except (OSError, h11.ProtocolError, EOFError):
                pass   # closed by the upstream while idle: once more on a new connection
        connection = await self._connect()
        return await self._on(connection, method, path, headers, body)

    async def _connect(self):
        try:
            reader, writer = await asyncio.open_connection(*self._address,
                                                           ssl=self._ssl or None)
        except OSError as e:
            raise _ConnectFailed(e.errno, e.strerror or str(e)) from None
        return reader, writer, h11.Connection(h11.CLIENT)

    async def _on(self, connection, method, path, headers, body):
        reader, writer, state = connection
        reusable = False
        try:
            writer.write(state.send(h11.Request(
                method=method, target=self._prefix + path,
                headers=[('host', self._host), ('content-length', str(len(body)))] + headers))
                + state.send(h11.Data(data=body)) + state.send(h11.EndOfMessage()))
            status, chunks = None, []
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data and status is None:
                        raise EOFError('the upstream closed the connection')
                    state.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise EOFError('the upstream closed the connection mid-answer')
            if state.our_state is h11.DONE and state.their_state is h11.DONE:
                state.start_next_cycle()
                reusable = True
            return status, b''.join(chunks)
        finally:
            if reusable:
                self._idle.append(connection)
            else:
                writer.close()

    async def aclose(self):
        for _, writer, _ in self._idle:
            writer.close()
        self._idle = []


@dataclasses.dataclass
class ForwardCall:
    """One client predict as the router forwards it (what PredictCall is locally)."""
    name: str
    version: int
    label: str
    key: str
    signature_name: str
    body: bytes
    request: codec.PredictRequest
    request_id: str = None


class RouterServer(ModelServer):
    """ModelServer whose versions are answered by the upstream (see the module docstring)."""

    def __init__(self, config, upstream):
        self.upstream = upstream
        super().__init__(config, loader=upstream)
        self.live = None   # needs the transform signature in-process: see the docstring
        self.upstream_errors = Counter(
            'tfx_canary_upstream_errors', 'predicts the upstream did not answer (reason: '
            'connect, timeout, overloaded, transport)', ['model', 'reason'],
            registry=self.metrics.registry)

    async def stop(self):
        await super().stop()
        await self.upstream.aclose()

    def _prepare(self, outcome, name, version, label, body, header_key, request_id):
        request, outcome.request_id, key = self.parse_rest(body, header_key, request_id)
        return ForwardCall(name, version, label, key, request.signature_name, body, request)

    async def predict(self, name, version, label, body, header_key, request_id=None):
        """Routes as local mode does, then forwards to the upstream (an Outcome, never raises)."""
        started = time.perf_counter()
        outcome = Outcome(status=200, body=b'')
        target = call = None
        try:
            # Parsing a large body is CPU work: run_predict moves it off the loop.
            call = outcome.call = await self.run_predict(
                len(body), self._prepare, outcome, name, version, label, body, header_key,
                request_id)
            plan = outcome.plan = self.registry.get(name).plan
            target, outcome.route = self._route(plan, call)
            outcome.model, outcome.role = target, plan.role(target.version)
            if outcome.request_id is None:
                outcome.request_id = new_request_id()
            call.request_id = outcome.request_id   # the shadow copy carries it too
            path = _forward_path(call, target, outcome.role)
            with target.use():
                outcome.status, outcome.body = await self.upstream.post(
                    path, body, outcome.request_id)
            if outcome.status == 200:
                outcome.probabilities = _probabilities(answer_outputs(outcome.body))
                if self.capture is not None:
                    await self._decode_for_capture(outcome, target, call)
        except ServingError as e:
            if isinstance(e, UpstreamError):
                self.upstream_errors.labels(name, e.reason).inc()
            outcome.error, outcome.status = e, e.http_status
            outcome.body = codec.error_body(e.message).encode()
        except Exception as e:  # noqa: BLE001  a bug must be a 500, not a dropped connection
            logger.exception('predict failed')
            outcome.status = 500
            outcome.body = codec.error_body('Internal error: %s: %s'
                                            % (type(e).__name__, e)).encode()
        if outcome.request_id is None:
            outcome.request_id = new_request_id()
        outcome.seconds = time.perf_counter() - started
        if target is not None:
            self.metrics.predicted(name, target.version, outcome.role, outcome.route,
                                   outcome.seconds, outcome.status,
                                   outcome.probabilities or ())
        return outcome

    async def _decode_for_capture(self, outcome, target, call):
        """The request's tensors for capture, by the answering version's signature inputs.

        Without them the rows are not captured (the answer is unaffected).
        """
        try:
            if not target.has_specs:
                target.remember(await self.upstream.get(
                    metadata_path(call.name, target.version)))
            specs = target.specs(call.signature_name)
            outcome.arrays, outcome.specs = codec.decode_inputs(call.request, specs), specs
        except ServingError as e:
            logger.warning('capture: %s v%d: rows not captured: %s', call.name,
                           target.version, e.message)
            outcome.arrays, outcome.specs = {}, {}

    def shadow_sync(self, name, canary, stable_version, call, arrays, stable_p):
        """Sends the copy of a request stable answered to the canary label (worker thread)."""
        started = time.perf_counter()
        canary_p = ()
        try:
            with canary.use():
                status, answer = self.upstream.post_sync(
                    predict_path(name, label=CANARY), call.body, call.request_id)
            if status == 200:
                canary_p = _probabilities(answer_outputs(answer))
        except UpstreamError as e:
            self.upstream_errors.labels(name, e.reason).inc()
            status = e.http_status
        self.metrics.predicted(name, canary.version, CANARY, routing.SHADOW,
                               time.perf_counter() - started, status, canary_p)
        if status != 200:
            self.metrics.shadow_failed(name)
            return
        self.metrics.shadow_compared(name, stable_version, canary.version, stable_p, canary_p)


def _forward_path(call, target, role):
    """Where a routed call goes: as the client addressed it, else the role's label."""
    if call.label is not None:
        return predict_path(call.name, label=call.label)
    if call.version is not None:
        return predict_path(call.name, version=call.version)
    if role in (STABLE, CANARY):
        return predict_path(call.name, label=role)
    return predict_path(call.name, version=target.version)   # neither role: never expected
