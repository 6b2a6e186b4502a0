"""`tfx-canary loop` (`make loop`): production traffic back into training, end to end.

On the bundled spans, in one workspace of its own:

 1. train v1 on span 1 (the pipeline; skipped with --skip-initial-train, which
    starts from the workspace's stable version instead);
 2. start `tfx-canary serve` (a real subprocess) capturing --capture-rate of
    the requests;
 3. replay span 2 through the REST predict API as production traffic, each
    request with its own X-Request-Id (serving/replay.py);
 4. deliver span 2's labels (its `tips`) later, through POST :feedback;
 5. stop serve (it publishes the capture) and `capture export` the labeled
    rows as a new span of the loop's data root, with its capture manifest;
 6. retrain on that span; the Evaluator judges it against v1, the model that
    served those rows, and CanaryPusher stages it as canary v2;
 7. start serve again (split mode) and replay span 3 with its labels;
 8. `rollout analyze --apply` with the loop's policy (runners/loop_policy.yaml:
    one step, so a passing canary is promoted and a failing one rolled back);
 9. stop serve; `lineage show --stable`, which names production capture as
    the data source of a model trained on it.

Every step prints a line with its numbers and wall time. `serve` is stopped
on success, on any failure and on Ctrl-C / SIGTERM / SIGHUP (try/finally
plus signal handlers; on Linux the child also gets SIGTERM if this process
dies without running them).
"""
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from common import locations
from common.errors import TfxCanaryError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOP_POLICY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'loop_policy.yaml')
DEFAULT_WORKSPACE = 'workspace-loop'   # relative to the current folder
LOOP_DIR = 'loop'                 # WORKSPACE/loop/: serve logs, label files
LOOP_DATA_DIR = 'loop-data'       # WORKSPACE/loop-data/: the exported spans
# Served rows carry only what the serving signature takes (and the request
# time): no census tracts. dropoff_census_tract is in the schema but is no
# model feature, so the ValidationGate's "column dropped" is accepted for the
# retrain on captured rows (pickup_census_tract is deprecated in the schema).
CAPTURE_ALLOWED_ANOMALIES = ('dropoff_census_tract',)
# Half the split traffic to the canary: span 3's ~3,000 labeled rows give
# ~1,500 per arm, enough for the live accuracy test at the loop's margin
# (runners/loop_policy.yaml); at 10% the canary gets ~300 and analyze holds.
LOOP_CANARY_PERCENT = 50
SERVE_START_SECONDS = 240.0
SERVE_STOP_SECONDS = 60.0


class LoopError(TfxCanaryError):
    """A loop step cannot go on (the message says which and why)."""


class NotStaged(LoopError):
    """The retrained model was judged and not staged (exit status 1, not 2)."""


class LoopInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C, so `serve` is stopped."""


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    workspace: str
    data_root: str                      # the bundled spans (train / replay / split spans)
    schema_path: str
    feature_keys: Tuple[str, ...]       # the raw features the model serves
    model_name: str = locations.DEFAULT_MODEL_NAME
    loop_data_root: Optional[str] = None    # default WORKSPACE/loop-data
    train_span: int = 1
    replay_span: int = 2
    split_span: int = 3
    replay_rows: Optional[int] = None   # rows of each replayed span (None: all)
    rows_per_request: int = 1
    concurrency: int = 4
    capture_rate: float = 1.0
    port: int = 0                       # 0: a free port
    skip_initial_train: bool = False
    allowed_anomalies: Tuple[str, ...] = CAPTURE_ALLOWED_ANOMALIES
    policy: str = LOOP_POLICY
    train_steps: Optional[int] = None   # None: the pipeline's default
    show_lineage: bool = True

    @property
    def data_out(self):
        return self.loop_data_root or os.path.join(self.workspace, LOOP_DATA_DIR)


@dataclasses.dataclass
class LoopResult:
    """The loop's numbers (what the closing lines print)."""
    steps: List[Tuple[str, float]] = dataclasses.field(default_factory=list)
    replayed_rows: int = 0
    captured: int = 0
    labeled: int = 0
    exported: int = 0
    exported_span: Optional[int] = None
    served_by: Dict[str, int] = dataclasses.field(default_factory=dict)
    retrained_version: Optional[int] = None
    served_version: Optional[int] = None
    retrained_auc: Optional[float] = None
    served_auc: Optional[float] = None
    blessed: Optional[bool] = None
    decision: Optional[str] = None
    stable_after: Optional[int] = None
    seconds: float = 0.0
    serve_pids: List[int] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- serve, as a child process

def free_port(host='127.0.0.1'):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: on Linux, SIGTERM the child when the loop process dies (even kill -9)."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServeProcess:
    """`tfx-canary serve` in a subprocess of its own session, logging to a file.

    `start()` returns once GET /v1/models/NAME answers 200; `stop()` sends SIGINT
    (serve then publishes its capture parts and exits 0) and kills it if it has
    not exited within SERVE_STOP_SECONDS. Safe to stop twice.
    """

    def __init__(self, args, model_name, log_path, host='127.0.0.1', port=0):
        self.host, self.port = host, port or free_port(host)
        self.model_name = model_name
        self.url = 'http://%s:%d' % (self.host, self.port)
        self.log_path = log_path
        self.argv = [sys.executable, '-m', 'runners.cli', 'serve', '--host', self.host,
                     '--port', str(self.port), *args]
        self.proc = None
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=SERVE_START_SECONDS):
        import httpx
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get('PYTHONPATH')]))
        env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, 'ab') as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith('linux') else None)
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while True:
                if self.proc.poll() is not None:
                    self.returncode = self.proc.returncode
                    raise LoopError('serve exited with status %d before answering; its log '
                                    '(%s) ends with:\n%s' % (self.returncode, self.log_path,
                                                             self.log_tail()))
                try:
                    if http.get('%s/v1/models/%s' % (self.url, self.model_name)
                                ).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise LoopError('serve did not answer on %s within %.0f s (log: %s)'
                                    % (self.url, timeout, self.log_path))
                time.sleep(0.2)

    def stop(self, timeout=SERVE_STOP_SECONDS):
        """Stops serve; returns its exit status (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        _LIVE.discard(self)
        return self.returncode

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, encoding='utf-8', errors='replace') as f:
                return ''.join(f.readlines()[-lines:])
        except OSError:
            return '(no log)'

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_LIVE = set()   # ServeProcesses started and not yet stopped (stopped by the signal path)


@contextlib.contextmanager
def stop_serve_on_signals():
    """SIGTERM and SIGHUP raise LoopInterrupted (SIGINT already raises KeyboardInterrupt),
    so the `finally` blocks that stop serve run; the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, _frame):
        raise LoopInterrupted(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for server in list(_LIVE):
            server.stop()


# ---------------------------------------------------------------- the story

class _Story:
    """Numbered steps with their wall time; details indented below each."""

    def __init__(self, total, out):
        self.total, self.out, self.number = total, out, 0
        self.result = LoopResult()

    @contextlib.contextmanager
    def step(self, title, short):
        self.number += 1
        self.out('[%d/%d] %s' % (self.number, self.total, title))
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            self.result.steps.append((short, seconds))
            self.out('      (%.1f s)' % seconds)

    def say(self, text):
        for line in text.splitlines():
            self.out('      ' + line)


def _shown(path):
    """A path relative to the current folder when it is below it, else absolute."""
    path = os.path.abspath(path)
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


def _load_schema(path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(path, encoding='utf-8') as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def _span_csv(data_root, span):
    from pipeline import spans
    _span, files = spans.check_span(data_root, 'span-{SPAN}/*.csv', span)
    if len(files) != 1:
        raise LoopError('span %d of %s has %d CSV files; the replay reads one'
                        % (span, data_root, len(files)))
    return files[0]


def _controller(options, audit=True):
    from rollout import audit as audit_lib
    from rollout import control
    metadata = locations.metadata_path_in(options.workspace)
    config = (audit_lib.sqlite_connection_config(metadata, create=False)
              if audit and os.path.isfile(metadata) else None)
    return control.RolloutController(locations.serving_root_in(options.workspace),
                                     options.model_name, metadata_connection_config=config)


def _roles(state):
    roles = {}
    if state.stable_version is not None:
        roles[state.stable_version] = 'stable'
    if state.canary_version is not None:
        roles[state.canary_version] = 'canary'
    return roles


def check_start(options):
    """The workspace must be fresh (or, with --skip-initial-train, serve a stable version
    and no canary): the loop stages its retrain as the canary and decides it."""
    from rollout.errors import RolloutError
    rollout_json = locations.rollout_json_path(locations.serving_root_in(options.workspace),
                                               options.model_name)
    if not options.skip_initial_train:
        used = [p for p in (locations.metadata_path_in(options.workspace), rollout_json)
                if os.path.exists(p)]
        if used:
            raise LoopError('%s already holds a pipeline run (%s): the loop starts from an '
                            'empty workspace (`make loop` removes ./workspace-loop first); pass '
                            '--skip-initial-train to start from its stable version instead'
                            % (options.workspace, used[0]))
        return None
    if not os.path.isfile(rollout_json):
        raise LoopError('--skip-initial-train: nothing serves in %s (no %s): run `tfx-canary '
                        'run --workspace %s --span 1` first, or leave the flag out'
                        % (options.workspace, rollout_json, options.workspace))
    try:
        state = _controller(options, audit=False).load()
    except RolloutError as e:
        raise LoopError('--skip-initial-train: %s' % e) from None
    if state.stable_version is None:
        raise LoopError('--skip-initial-train: %s has no stable version' % rollout_json)
    if state.canary_version is not None:
        raise LoopError('--skip-initial-train: canary v%d is in progress in %s: promote or roll '
                        'it back first (`tfx-canary rollout promote|rollback --workspace %s`); '
                        'the loop stages its retrain as the canary'
                        % (state.canary_version, options.workspace, options.workspace))
    return state


def _check_options(options):
    if not 0 < options.capture_rate <= 1:
        raise LoopError('--capture-rate must be above 0 and at most 1 (the loop retrains on '
                        'what serve captures), got %s' % options.capture_rate)
    if options.replay_rows is not None and options.replay_rows < 1:
        raise LoopError('--replay-rows must be at least 1, got %d' % options.replay_rows)
    if options.rows_per_request < 1:
        raise LoopError('--rows-per-request must be at least 1, got %d'
                        % options.rows_per_request)
    if options.concurrency < 1:
        raise LoopError('--concurrency must be at least 1, got %d' % options.concurrency)
    if not os.path.isfile(options.schema_path):
        raise LoopError('schema %s does not exist: pass --schema' % options.schema_path)
    if not os.path.isfile(options.policy):
        raise LoopError('policy %s does not exist: pass --policy' % options.policy)
    spans = {options.replay_span, options.split_span}
    if not options.skip_initial_train:
        spans.add(options.train_span)
    for span in sorted(spans):
        _span_csv(options.data_root, span)


def _pipeline_config(options, **fields):
    from pipeline.configs import PipelineConfig
    config = PipelineConfig(workspace=options.workspace, model_name=options.model_name,
                            schema_path=options.schema_path, **fields)
    if options.train_steps is not None:
        config = dataclasses.replace(config, train_steps=options.train_steps)
    return config


def _train(options, story, config):
    from runners import local_runner
    summary = local_runner.run(config, out=story.say)
    return summary


def _serve(options, story, capture_span, label):
    from serving import capture
    log = os.path.join(options.workspace, LOOP_DIR, 'serve-%s.log' % label)
    server = ServeProcess(
        ['--workspace', options.workspace, '--model-name', options.model_name, '--mode', 'split',
         '--capture-rate', repr(options.capture_rate), '--capture-span', str(capture_span),
         '--capture-schema', options.schema_path, '--poll-seconds', '0.5'],
        options.model_name, log, port=options.port)
    server.start()
    story.result.serve_pids.append(server.pid)
    story.say('serve pid %d on %s, split mode, capturing %g%% of requests into %s (log %s)'
              % (server.pid, server.url, 100 * options.capture_rate,
                 capture.span_dir(locations.capture_dir_in(options.workspace), capture_span),
                 _shown(log)))
    return server


def _replay(options, schema, span, server, state, story):
    from serving import replay as replay_lib
    path = _span_csv(options.data_root, span)
    replay = replay_lib.Replay.from_csv(path, schema, options.feature_keys, _label_key(options),
                                        limit=options.replay_rows,
                                        rows_per_request=options.rows_per_request)
    sent = replay.send(server.url, options.model_name, concurrency=options.concurrency)
    story.say('%d rows of %s in %d predict requests (X-Request-Id replay-%s-*): %d answered 200 '
              '(%s), %d failed; %.0f requests/s'
              % (sent.rows, _shown(path), sent.requests, replay.token, sent.ok,
                 replay_lib.versions_text(sent.by_version, _roles(state)), sent.failed,
                 sent.requests_per_second))
    if sent.ok == 0:
        raise LoopError('serve answered none of the %d predict requests (%s); its log (%s) '
                        'ends with:\n%s' % (sent.requests, sent.statuses, server.log_path,
                                            server.log_tail()))
    return replay, sent


def _deliver(replay, server, options, story):
    delivered = replay.deliver_labels(server.url, options.model_name)
    story.say('%d labels (%s, from the CSV, kept by request id and row) in %d POST '
              '/v1/models/%s:feedback requests: %d accepted, %d unknown, %d duplicate'
              % (delivered.sent, replay.label_key, delivered.requests, options.model_name,
                 delivered.accepted, delivered.unknown, delivered.duplicate))
    return delivered


_LABEL_KEY = {}


def _label_key(options):
    """The label column as the training CSV has it (the schema's non-SERVING feature)."""
    if options.schema_path not in _LABEL_KEY:
        from serving import labels
        _LABEL_KEY[options.schema_path] = labels.label_spec_from_schema(options.schema_path).name
    return _LABEL_KEY[options.schema_path]


def _next_capture_span(options):
    from serving import capture
    return (capture.latest_span(locations.capture_dir_in(options.workspace)) or 0) + 1


def _auc(metrics):
    return metrics.get('auc') if metrics else None


def _fmt(value):
    return 'n/a' if value is None else '%.4f' % value


def run_loop(options, out=print):
    """Runs the whole loop (module docstring); returns LoopResult. Raises LoopError."""
    _check_options(options)
    start_state = check_start(options)
    started = time.monotonic()
    story = _Story(9 if not options.skip_initial_train else 8, out)
    result = story.result
    schema = _load_schema(options.schema_path)
    out('Production loop: served traffic back into training, in %s'
        % os.path.abspath(options.workspace))
    with stop_serve_on_signals():
        # 1. the first model
        if options.skip_initial_train:
            out('       (--skip-initial-train: starting from stable v%d)'
                % start_state.stable_version)
        else:
            with story.step('train v1 on span %d of %s' % (options.train_span,
                                                           _shown(options.data_root)), 'train v1'):
                summary = _train(options, story, _pipeline_config(
                    options, data_root=options.data_root, span=options.train_span))
                if not summary.pushed:
                    raise LoopError('the first model was not staged (%s): nothing to serve'
                                    % (summary.not_pushed_reason or 'not blessed'))
                story.say('stable v1: auc %s on span %d\'s eval split, staged at %s'
                          % (_fmt(_auc(summary.metrics)), options.train_span,
                             summary.pushed_destination))
        state = _controller(options, audit=False).load()
        result.served_version = state.stable_version

        # 2-4. serve, replay, labels
        capture_span = _next_capture_span(options)
        server = None
        try:
            with story.step('serve v%d and replay span %d as production traffic'
                            % (state.stable_version, options.replay_span), 'serve + replay'):
                server = _serve(options, story, capture_span, 'replay')
                replay, sent = _replay(options, schema, options.replay_span, server, state,
                                       story)
                result.replayed_rows = sent.rows
                result.served_by = dict(sent.by_version)
            with story.step('deliver span %d\'s labels later, through the feedback API'
                            % options.replay_span, 'labels'):
                delivered = _deliver(replay, server, options, story)
                if delivered.accepted == 0:
                    raise LoopError('the server accepted none of the %d labels (%d unknown): '
                                    'nothing to export' % (delivered.sent, delivered.unknown))
            # 5. export
            with story.step('stop serve, export the labeled capture as a training span',
                            'export'):
                code = server.stop()
                story.say('serve stopped (exit status %s): capture span %d published'
                          % (code, capture_span))
                exported = _export(options, capture_span, story)
        finally:
            if server is not None:
                server.stop()
        result.captured = exported.counts.captured
        result.labeled = exported.counts.labeled + exported.counts.rejected
        result.exported = exported.counts.labeled
        result.exported_span = exported.span

        # 6. retrain on the exported span
        with story.step('retrain on exported span %d, judged against v%d (the model that '
                        'served it)' % (exported.span, state.stable_version), 'retrain'):
            story.say('accepting anomaly %s: served rows carry only the model\'s features and '
                      'the request time (not a model feature; the schema is unchanged)'
                      % ', '.join(options.allowed_anomalies) if options.allowed_anomalies
                      else 'no anomalies accepted')
            summary = _train(options, story, _pipeline_config(
                options, data_root=os.path.abspath(options.data_out), span=exported.span,
                allowed_anomalies=tuple(options.allowed_anomalies),
                canary_traffic_percent=LOOP_CANARY_PERCENT))
            result.retrained_auc = _auc(summary.metrics)
            result.served_auc = _auc(summary.baseline_metrics)
            result.blessed = summary.blessed
            # The drift gate judged the captured span against the statistics
            # v1 was trained on (its training-data copy on the serving root).
            story.say('drift gate, captured span vs v%d\'s training data: %s'
                      % (state.stable_version, summary.drift or 'did not run'))
            delta = (None if None in (result.retrained_auc, result.served_auc)
                     else result.retrained_auc - result.served_auc)
            story.say('retrained: auc %s vs %s for v%d, the model that served (delta %s), on '
                      'the exported span\'s eval split: %s'
                      % (_fmt(result.retrained_auc), _fmt(result.served_auc),
                         state.stable_version, 'n/a' if delta is None else '%+.4f' % delta,
                         'blessed' if summary.blessed else 'NOT blessed'))
            after = _controller(options, audit=False).load()
            if not summary.pushed:
                raise NotStaged('the retrained model was not staged (%s): the loop stops '
                                'before the canary phase; v%d keeps serving'
                                % (summary.not_pushed_reason or 'not blessed by the Evaluator',
                                   state.stable_version))
            result.retrained_version = after.canary_version
            story.say('staged as canary v%d at %d%% of traffic (stable v%d)'
                      % (after.canary_version, after.canary_traffic_percent,
                         after.stable_version))

        # 7-8. split traffic, its labels, analyze
        capture_span = _next_capture_span(options)
        server = None
        try:
            with story.step('serve stable v%d + canary v%d, replay span %d in split mode with '
                            'its labels' % (after.stable_version, after.canary_version,
                                            options.split_span), 'split replay'):
                server = _serve(options, story, capture_span, 'split')
                ready = time.monotonic()
                replay, sent = _replay(options, schema, options.split_span, server, after, story)
                _deliver(replay, server, options, story)
            with story.step('rollout analyze --apply (policy %s)'
                            % _shown(options.policy), 'analyze'):
                decision = _analyze(options, server, ready, story)
                result.decision = decision
            with story.step('stop serve', 'stop'):
                story.say('serve stopped (exit status %s)' % server.stop())
        finally:
            if server is not None:
                server.stop()
        final = _controller(options, audit=False).load()
        result.stable_after = final.stable_version

        # 9. lineage
        if options.show_lineage:
            which = ('--stable' if final.stable_version == result.retrained_version
                     else '--version %d' % result.retrained_version)
            with story.step('lineage show %s' % which, 'lineage'):
                _lineage(options, final, result, story)
    result.seconds = time.monotonic() - started
    _closing(result, out)
    return result


def _export(options, capture_span, story):
    from serving import export, labels
    spec = labels.label_spec_from_schema(options.schema_path)
    # The replayed span's rows come back under its number (span 2 replayed ->
    # span 2 exported), so "span 2 vs. span 1" in the drift gate and lineage
    # reads as the story it is; the next free number if that one is taken.
    span = options.replay_span
    if os.path.exists(os.path.join(options.data_out, 'span-%d' % span)):
        span = None
    exported = export.export(locations.capture_dir_in(options.workspace), capture_span,
                             options.data_out, spec, span=span)
    c = exported.counts
    story.say('exported span %d into %s: %d rows (captured %d, labeled %d, unlabeled %d, '
              'rejected %d), served by %s, capture rate %s; manifest %s'
              % (exported.span, _shown(options.data_out), c.labeled, c.captured,
                 c.labeled + c.rejected, c.unlabeled, c.rejected,
                 ', '.join('v%s %s %d' % (s['version'], s['role'], s['rows'])
                           for s in exported.manifest['served_by']),
                 exported.manifest['capture_rate'], export.MANIFEST))
    return exported


def _analyze(options, server, ready, story):
    from rollout import analyze
    policy = analyze.load_policy(options.policy)
    soak = float(policy.get('min_window_seconds') or 0) + 1.0 - (time.monotonic() - ready)
    if soak > 0:
        story.say('waiting %.0f s: the policy\'s min_window_seconds of soak time' % soak)
        time.sleep(soak)
    controller = _controller(options)
    decision = analyze.analyze(controller.load(), analyze.load_snapshot(server.url), policy)
    story.say(analyze.format_decision(decision))
    applied = analyze.apply(controller, decision, 'tfx-canary loop')
    state = controller.load()
    if applied is None:
        story.say('nothing applied (hold): canary v%d stays at %d%%; run `tfx-canary rollout '
                  'analyze --apply --workspace %s` once serve has seen more traffic'
                  % (state.canary_version, state.canary_traffic_percent, options.workspace))
    else:
        story.say('applied %s: stable v%s%s' % (
            applied.event, state.stable_version,
            ', canary v%d at %d%%' % (state.canary_version, state.canary_traffic_percent)
            if state.canary_version is not None else ', no canary'))
    return decision.decision


def _lineage(options, final, result, story):
    import contextlib as _contextlib
    import io

    from runners import cli
    argv = ['lineage', 'show', '--workspace', options.workspace, '--model-name',
            options.model_name, '--no-slices']
    if final.stable_version == result.retrained_version:
        argv.append('--stable')
    else:
        story.say('v%d, the retrained model, is not stable (analyze: %s): its lineage, '
                  'not stable v%d\'s' % (result.retrained_version, result.decision,
                                          final.stable_version))
        argv += ['--version', str(result.retrained_version)]
    args = cli.build_parser().parse_args(argv)
    buf = io.StringIO()
    with _contextlib.redirect_stdout(buf):
        args.func(args)
    story.say(buf.getvalue().rstrip())


def _closing(result, out):
    out('')
    out('Loop done in %.1f s: %d rows replayed, %d captured, %d labeled, %d exported as '
        'span %s; retrained v%s auc %s vs %s for v%s, the model that served; analyze: %s; '
        'stable now v%s'
        % (result.seconds, result.replayed_rows, result.captured, result.labeled,
           result.exported, result.exported_span, result.retrained_version,
           _fmt(result.retrained_auc), _fmt(result.served_auc), result.served_version,
           result.decision, result.stable_after))
    out('  wall time per step: ' + '; '.join('%s %.1f s' % step for step in result.steps))


# ---------------------------------------------------------------- CLI

def add_subcommand(subparsers):
    from common.cli import HelpFormatter
    from pipeline.configs import BUNDLED_DATA_ROOT
    p = subparsers.add_parser(
        'loop', formatter_class=HelpFormatter,
        help='the whole production loop on bundled data: train, serve, replay, label, export, '
             'retrain, canary, analyze, lineage',
        description='Close the loop from production back to training, on the bundled spans: '
                    'train v1 on span 1; start `tfx-canary serve` (a subprocess) capturing '
                    'requests; replay span 2 through the REST predict API as production '
                    'traffic with request ids; deliver its labels later through POST '
                    '/v1/models/NAME:feedback; stop serve and `capture export` the labeled '
                    'rows as a span of WORKSPACE/loop-data; retrain on it (judged against v1, '
                    'the model that served it; --allow-anomaly dropoff_census_tract, since '
                    'served rows carry no census tract); serve stable + canary and replay '
                    'span 3 in split mode with its labels; `rollout analyze --apply` with a '
                    'one-step policy (promote or roll back); `lineage show --stable`. Prints '
                    'a line per step with its numbers and wall time. serve is stopped on '
                    'exit, on failure and on Ctrl-C. A few minutes on 2 cores.',
        epilog='Examples:\n'
               '  make loop                                   # = the next line, in a fresh '
               './workspace-loop\n'
               '  tfx-canary loop --workspace workspace-loop\n'
               '  tfx-canary loop --workspace ws --skip-initial-train   # ws serves a stable '
               'version, no canary\n'
               'Exit status: 0 done; 1 the retrained model was not staged (not blessed); '
               '2 bad input or a step failed; 130 interrupted.')
    p.add_argument('--workspace', default=None, metavar='DIR',
                   help='the loop\'s own workspace (pipeline outputs, ML Metadata, serving/, '
                        'capture/, loop-data/, loop/ serve logs): empty or absent, unless '
                        '--skip-initial-train (default: ./%s, beside `make run`\'s '
                        './workspace)' % DEFAULT_WORKSPACE)
    locations.add_location_options(p, workspace=False, metadata=False, serving=False)
    p.add_argument('--data-root', default=BUNDLED_DATA_ROOT, metavar='DIR',
                   help='spans to train on and to replay (span-N/*.csv)')
    p.add_argument('--schema', default=None, metavar='FILE',
                   help='schema.pbtxt (default: the bundled taxi schema)')
    p.add_argument('--loop-data-root', default=None, metavar='DIR',
                   help='data root the capture is exported into (default: WORKSPACE/%s)'
                        % LOOP_DATA_DIR)
    p.add_argument('--train-span', type=int, default=1, metavar='N',
                   help='span v1 is trained on')
    p.add_argument('--replay-span', type=int, default=2, metavar='N',
                   help='span replayed as production traffic, labeled, exported, retrained on')
    p.add_argument('--split-span', type=int, default=3, metavar='N',
                   help='span replayed in split mode (stable + canary) before analyze')
    p.add_argument('--replay-rows', type=int, default=None, metavar='N',
                   help='replay only the first N usable rows of each span (default: all, '
                        '~4,900 of the bundled ~5,000)')
    p.add_argument('--rows-per-request', type=int, default=1, metavar='N',
                   help='rows in one predict request')
    p.add_argument('--concurrency', type=int, default=4, metavar='N',
                   help='replay client threads')
    p.add_argument('--capture-rate', type=float, default=1.0, metavar='R',
                   help='fraction of requests serve captures (each exported row stands for '
                        '1/R requests); 1.0 keeps every replayed row')
    p.add_argument('--port', type=int, default=0,
                   help='port serve listens on, on 127.0.0.1 (default: a free one)')
    p.add_argument('--skip-initial-train', action='store_true',
                   help='start from the workspace\'s stable version instead of training v1')
    p.add_argument('--allow-anomaly', action='append', metavar='NAME', default=None,
                   help='anomaly to accept in the retrain on captured rows (repeatable; '
                        'default: %s)' % ', '.join(CAPTURE_ALLOWED_ANOMALIES))
    p.add_argument('--policy', default=LOOP_POLICY, metavar='FILE',
                   help='rollout analyze policy, keys over rollout/default_policy.yaml '
                        '(the default is one step: a passing canary is promoted)')
    p.add_argument('--train-steps', type=int, default=None, metavar='N',
                   help='Trainer steps of both pipeline runs (default: the pipeline\'s)')
    p.set_defaults(func=cmd_loop)


def cmd_loop(args):
    from modules import features
    from pipeline.configs import PipelineConfig
    where = locations.resolve(args, infer_workspace=False)
    workspace = args.workspace or DEFAULT_WORKSPACE
    options = LoopOptions(
        workspace=os.path.abspath(workspace), data_root=os.path.abspath(args.data_root),
        schema_path=os.path.abspath(args.schema or PipelineConfig().schema_path),
        feature_keys=tuple(features.RAW_FEATURE_KEYS), model_name=where.model_name,
        loop_data_root=args.loop_data_root and os.path.abspath(args.loop_data_root),
        train_span=args.train_span, replay_span=args.replay_span, split_span=args.split_span,
        replay_rows=args.replay_rows, rows_per_request=args.rows_per_request,
        concurrency=args.concurrency, capture_rate=args.capture_rate, port=args.port,
        skip_initial_train=args.skip_initial_train,
        allowed_anomalies=tuple(CAPTURE_ALLOWED_ANOMALIES if args.allow_anomaly is None
                                else args.allow_anomaly),
        policy=args.policy, train_steps=args.train_steps)
    try:
        run_loop(options)
    except NotStaged as e:
        print('error: %s' % e, file=sys.stderr)
        return 1
    return 0
