"""`tfx-canary rollout watch`: analyze and apply every interval until the rollout ends.

A controller loop in the manner of Argo Rollouts' analysis runs and Flagger's
canary analysis, on top of `rollout analyze` (rollout/analyze.py): every
`interval_seconds` it reads the metrics snapshot, analyzes the live canary
and applies what the analysis decided, with these limits (policy `watch:`):

* a failed analysis (analyze says ROLLBACK) rolls the canary back once
  `failure_limit` analyses in a row have failed; a hold or a pass in between
  starts the count again;
* an inconclusive analysis (HOLD: soaking, waiting for requests or labels,
  stale or unreadable metrics) is counted, and `inconclusive_limit` of them in
  a row at one step stop the watch with the rollout left where it is, for a
  person to decide (0: never stop for holds);
* metrics that cannot be read (the server restarting) are inconclusive, never
  a failure, and leave the failure count as it was;
* a passing analysis steps the traffic up (a new window: both counts start
  again) or promotes, which ends the watch.

Every applied change goes through RolloutController with compare-and-set:
if rollout.json no longer serves what was analyzed (a person promoted or
rolled back, the pipeline staged a new canary), nothing is applied and the
watch ends, saying what changed. Stopping the watch (Ctrl-C, SIGTERM) sets a
flag that is read between looks, so a change being applied is finished, not
cut in half.

With --notify each look is posted as JSON to a webhook from a thread of its own: a failed
delivery is retried and logged, never delays or blocks the rollout.
"""
import dataclasses
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Optional

from rollout import analyze as analyze_mod
from rollout.errors import RolloutChangedError, RolloutError
from rollout.metrics_snapshot import load_snapshot

logger = logging.getLogger(__name__)

# How a look came out.
FAILED = 'failed'              # analyze decided ROLLBACK
INCONCLUSIVE = 'inconclusive'  # analyze decided HOLD
UNAVAILABLE = 'unavailable'    # the metrics could not be read (counted as inconclusive)
PASSED = 'passed'              # analyze decided SET_TRAFFIC or PROMOTE

# How the watch ended, and the exit status `rollout watch` gives for it.
PROMOTED = 'promoted'
ROLLED_BACK = 'rolled back'
PAUSED = 'paused'              # inconclusive_limit reached: a person decides
CHANGED = 'changed'            # the rollout changed under the watch
INTERRUPTED = 'interrupted'    # Ctrl-C / SIGTERM
EXIT_STATUS = {PROMOTED: 0, ROLLED_BACK: 1, PAUSED: 3, CHANGED: 4, INTERRUPTED: 130}


@dataclasses.dataclass(frozen=True)
class WatchSettings:
    """The policy's `watch:` section, after command-line overrides."""
    interval_seconds: float
    failure_limit: int
    inconclusive_limit: int     # 0: holds never stop the watch

    @classmethod
    def from_policy(cls, policy, policy_path, interval=None, failure_limit=None,
                    inconclusive_limit=None):
        """The policy's values (checked, errors naming `policy_path`), then the flags'."""
        section = policy['watch']
        _check(section['interval_seconds'], 'interval_seconds', policy_path)
        _check(section['failure_limit'], 'failure_limit', policy_path)
        _check(section['inconclusive_limit'], 'inconclusive_limit', policy_path)
        settings = cls(
            interval_seconds=section['interval_seconds'] if interval is None else interval,
            failure_limit=section['failure_limit'] if failure_limit is None else failure_limit,
            inconclusive_limit=(section['inconclusive_limit'] if inconclusive_limit is None
                                else inconclusive_limit))
        for name in ('interval_seconds', 'failure_limit', 'inconclusive_limit'):
            _check(getattr(settings, name), name)
        return settings


_RULES = {   # key: (whole numbers only, lowest allowed, what it means)
    'interval_seconds': (False, 0.1, 'seconds between analyses'),
    'failure_limit': (True, 1, 'failed analyses in a row before a rollback'),
    'inconclusive_limit': (True, 0, 'inconclusive analyses in a row before the watch '
                                    'stops, 0 = never'),
}
_FLAGS = {'interval_seconds': '--interval', 'failure_limit': '--failure-limit',
          'inconclusive_limit': '--inconclusive-limit'}


def _check(value, name, policy_path=None):
    whole, low, meaning = _RULES[name]
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        where = ('%s: policy watch.%s' % (policy_path, name) if policy_path
                 else _FLAGS[name])
        raise RolloutError('%s must be a %s >= %g (%s), got %r' % (
            where, 'whole number' if whole else 'number', low, meaning, value))


@dataclasses.dataclass(frozen=True)
class Look:
    """One analysis of the watch, and what was done about it."""
    number: int
    at: float                                   # epoch seconds
    outcome: str                                # FAILED, INCONCLUSIVE, UNAVAILABLE, PASSED
    decision: Optional[analyze_mod.Decision]    # None when the metrics were unavailable
    applied: Optional[str]                      # the history event applied, if any
    failures_in_a_row: int
    inconclusive_in_a_row: int
    message: str                                # the decision in words, with its numbers

    def to_dict(self):
        data = dataclasses.asdict(self)
        data['decision'] = None if self.decision is None else self.decision.to_dict()
        return data


@dataclasses.dataclass(frozen=True)
class WatchResult:
    """How the watch ended."""
    ended: str          # PROMOTED, ROLLED_BACK, PAUSED, CHANGED or INTERRUPTED
    looks: int
    message: str
    stable_version: Optional[int]
    canary_version: Optional[int]
    traffic: int

    @property
    def exit_status(self):
        return EXIT_STATUS[self.ended]

    def to_dict(self):
        return dict(dataclasses.asdict(self), exit_status=self.exit_status)


class _Counts:
    """The consecutive failed / inconclusive looks (private, mutable)."""

    def __init__(self):
        self.failures = 0
        self.inconclusive = 0

    def count(self, outcome):
        if outcome == FAILED:
            self.failures, self.inconclusive = self.failures + 1, 0
        elif outcome == INCONCLUSIVE:
            self.failures, self.inconclusive = 0, self.inconclusive + 1
        elif outcome == UNAVAILABLE:   # neither resets nor adds to the failures
            self.inconclusive += 1
        else:
            self.failures = self.inconclusive = 0


class Watch:
    """The loop: `run()` looks every interval until the rollout ends or `stop` is set.

    controller: a RolloutController; metrics_source: a snapshot URL or file;
    on_look(Look) and on_change(TransitionResult) report as it goes.
    """

    def __init__(self, controller, metrics_source, policy, settings, stop=None,
                 on_start=None, on_look=None, on_change=None, reason='', actor=None,
                 clock=time.time):
        self.controller = controller
        self.metrics_source = metrics_source
        self.policy = policy
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_start = on_start or (lambda state: None)
        self.on_look = on_look or (lambda look: None)
        self.on_change = on_change or (lambda result: None)
        self.reason = reason
        self.actor = actor
        self.clock = clock
        self._counts = _Counts()
        self._looks = 0

    def run(self):
        state = self.controller.load()
        if state.canary_version is None:
            raise RolloutError('%s has no live canary (stable is v%s): nothing to watch; the '
                               'pipeline stages the next one' % (state.model_name,
                                                                 state.stable_version))
        watched = state.canary_version
        self.on_start(state)
        while True:
            ended = self._look(watched)
            if ended is not None:
                return ended
            if self.stop.wait(self.settings.interval_seconds):
                return self._end(INTERRUPTED, 'stopped by a signal between looks; the rollout '
                                 'is left as it is')

    # ------------------------------------------------------------ one look

    def _look(self, watched):
        """Analyze once and act; a WatchResult when the watch is over, else None."""
        if self.stop.is_set():
            return self._end(INTERRUPTED, 'stopped by a signal; the rollout is left as it is')
        state = self.controller.load()
        if state.canary_version != watched:
            return self._end(CHANGED, 'canary v%s is no longer live (someone else promoted, '
                             'rolled back or staged a new canary): nothing more to watch'
                             % watched)
        self._looks += 1
        try:
            snapshot = load_snapshot(self.metrics_source)
        except RolloutError as e:
            return self._report(UNAVAILABLE, None, None,
                                'metrics unavailable (counted as inconclusive): %s' % e)
        decision = analyze_mod.analyze(state, snapshot, self.policy, now=self.clock())
        if decision.decision == analyze_mod.HOLD:
            return self._report(INCONCLUSIVE, decision, None,
                                analyze_mod.describe_decision(decision))
        if decision.decision == analyze_mod.ROLLBACK:
            return self._failed(decision)
        return self._apply(PASSED, decision)

    def _failed(self, decision):
        if self._counts.failures + 1 < self.settings.failure_limit:
            return self._report(FAILED, decision, None, '%s (not applied: failed analysis %d of '
                                '%d in a row before a rollback)' % (
                                    analyze_mod.describe_decision(decision),
                                    self._counts.failures + 1, self.settings.failure_limit))
        return self._apply(FAILED, decision)

    def _apply(self, outcome, decision):
        message = analyze_mod.describe_decision(decision)
        try:
            result = analyze_mod.apply(self.controller, decision, self.reason, actor=self.actor)
        except RolloutChangedError as e:
            self._report(outcome, decision, None, message + ' (not applied)')
            return self._end(CHANGED, str(e))
        self._report(outcome, decision, result.event, message)   # never pauses: not a hold
        self.on_change(result)
        if decision.decision == analyze_mod.PROMOTE:
            return self._end(PROMOTED, 'canary v%d promoted to stable' % decision.canary_version)
        if decision.decision == analyze_mod.ROLLBACK:
            return self._end(ROLLED_BACK, 'canary v%d rolled back after %d failed analyses in a '
                             'row: %s' % (decision.canary_version, self._counts.failures,
                                          '; '.join(decision.failures)))
        return None

    def _report(self, outcome, decision, applied, message):
        """Counts the look, reports it; a PAUSED result at the inconclusive limit."""
        self._counts.count(outcome)
        self.on_look(Look(number=self._looks, at=self.clock(), outcome=outcome, decision=decision,
                          applied=applied, failures_in_a_row=self._counts.failures,
                          inconclusive_in_a_row=self._counts.inconclusive, message=message))
        limit = self.settings.inconclusive_limit
        if outcome in (INCONCLUSIVE, UNAVAILABLE) and limit and self._counts.inconclusive >= limit:
            return self._end(PAUSED, '%d inconclusive analyses in a row (policy '
                             'watch.inconclusive_limit %d), the last: %s; the rollout stays '
                             'as it is: decide with `rollout promote` / `rollout rollback`, or '
                             'run `rollout watch` again' % (self._counts.inconclusive, limit,
                                                           message))
        return None

    def _end(self, ended, message):
        state = self.controller.load()
        return WatchResult(ended=ended, looks=self._looks, message=message,
                           stable_version=state.stable_version,
                           canary_version=state.canary_version,
                           traffic=state.canary_traffic_percent)


# ---------------------------------------------------------------- notify

class Notifier:
    """Posts JSON documents to a webhook from a thread of its own.

    `post()` never blocks: the document is queued (the oldest dropped, and
    logged, when `max_pending` are waiting). Each is sent up to `attempts`
    times with a doubling pause; one that still fails is logged and dropped.
    `close()` waits up to `timeout` seconds for what is queued.
    """

    def __init__(self, url, attempts=3, timeout=5.0, backoff_seconds=0.5, max_pending=100):
        if not url.startswith(('http://', 'https://')):
            raise RolloutError('--notify must be an http:// or https:// URL, got %r' % url)
        self.url = url
        self.attempts = attempts
        self.timeout = timeout
        self.backoff_seconds = backoff_seconds
        self.delivered = 0
        self.failed = 0
        self._queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name='notify', daemon=True)
        self._thread.start()

    def post(self, document):
        while True:
            try:
                self._queue.put_nowait(document)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                    self._queue.task_done()
                    self.failed += 1
                    logger.warning('notify %s: too many undelivered notifications, dropped '
                                   'one: %s', self.url, _summary(dropped))
                except queue.Empty:
                    pass

    def close(self, timeout=10.0):
        """Waits for queued notifications (at most `timeout` s); True if all went out."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _run(self):
        while True:
            document = self._queue.get()
            try:
                self._deliver(document)
            finally:
                self._queue.task_done()

    def _deliver(self, document):
        body = json.dumps(document, sort_keys=True).encode('utf-8')
        pause = self.backoff_seconds
        for attempt in range(1, self.attempts + 1):
            try:
                request = urllib.request.Request(
                    self.url, data=body, method='POST',
                    headers={'Content-Type': 'application/json'})
                with urllib.request.urlopen(request, timeout=self.timeout):
                    self.delivered += 1
                    return
            except (urllib.error.URLError, OSError, ValueError) as e:
                error = getattr(e, 'reason', None) or e
            if attempt < self.attempts:
                time.sleep(pause)
                pause *= 2
        self.failed += 1
        logger.warning('notify %s: not delivered after %d attempts (%s): %s', self.url,
                       self.attempts, error, _summary(document))


def _summary(document):
    return '%s look %s: %s' % (document.get('model', '?'), document.get('look', '-'),
                               document.get('message', ''))


# ---------------------------------------------------------------- CLI glue

def add_arguments(parser):
    analyze_mod.add_source_arguments(parser)
    parser.add_argument('--interval', type=float, default=None, metavar='SECONDS',
                        help='seconds between analyses (default: policy watch.interval_seconds, '
                             '60)')
    parser.add_argument('--failure-limit', type=int, default=None, metavar='N',
                        help='failed analyses in a row before the canary is rolled back '
                             '(default: policy watch.failure_limit, 2)')
    parser.add_argument('--inconclusive-limit', type=int, default=None, metavar='N',
                        help='inconclusive analyses in a row at one step before the watch stops '
                             'and leaves the rollout to you; 0 = never (default: policy '
                             'watch.inconclusive_limit, 30)')
    parser.add_argument('--notify', default=None, metavar='URL',
                        help='POST each analysis and the end as JSON to this webhook (retried '
                             '3 times, logged on failure; never blocks the rollout)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object per analysis and one for the end (JSON '
                             'Lines) instead of text')


def _printer(args, model_name, notifier, print_result):
    """The on_look / on_change callbacks: print (text or JSON Lines) and notify."""
    def on_look(look):
        document = dict(look.to_dict(), model=model_name, kind='look')
        if notifier is not None:
            notifier.post(document)
        if args.json:
            print(json.dumps(document, sort_keys=True), flush=True)
            return
        counts = 'failed %d of %d, inconclusive %d%s in a row' % (
            look.failures_in_a_row, args.settings.failure_limit, look.inconclusive_in_a_row,
            ' of %d' % args.settings.inconclusive_limit if args.settings.inconclusive_limit
            else '')
        print('[%s] look %d: %s  (%s)' % (time.strftime('%H:%M:%S', time.localtime(look.at)),
                                          look.number, look.message, counts), flush=True)
        if look.decision is not None and look.outcome in (FAILED, PASSED):
            print(analyze_mod.format_decision(look.decision), flush=True)

    def on_change(result):
        if not args.json:
            print_result(result)

    return on_look, on_change


def run(args, controller, print_result, stop):
    """The `rollout watch` handler body; returns the exit status (EXIT_STATUS)."""
    from rollout import state as state_mod  # pylint: disable=import-outside-toplevel
    from rollout.metrics_snapshot import snapshot_path  # pylint: disable=import-outside-toplevel

    policy = analyze_mod.load_policy(args.policy)
    args.settings = WatchSettings.from_policy(
        policy, args.policy or analyze_mod.DEFAULT_POLICY, args.interval, args.failure_limit,
        args.inconclusive_limit)
    notifier = Notifier(args.notify) if args.notify else None
    source = args.metrics or snapshot_path(controller.serving_root, controller.model_name)
    on_look, on_change = _printer(args, controller.model_name, notifier, print_result)

    def on_start(state):
        if not args.json:
            print('watching %s canary v%d at %d%% (stable v%d): every %g s from %s (failure '
                  'limit %d, inconclusive limit %s)' % (
                      controller.model_name, state.canary_version,
                      state.canary_traffic_percent, state.stable_version,
                      args.settings.interval_seconds, source, args.settings.failure_limit,
                      args.settings.inconclusive_limit or 'none'), flush=True)

    watch = Watch(controller, source, policy, args.settings, stop=stop, on_start=on_start,
                  on_look=on_look, on_change=on_change, reason=args.reason,
                  actor='rollout watch (%s)' % state_mod.default_actor())
    result = watch.run()
    document = dict(result.to_dict(), model=controller.model_name, kind='end')
    if notifier is not None:
        notifier.post(document)
        if not notifier.close():
            logger.warning('notify %s: gave up waiting for the last notifications',
                           args.notify)
    if args.json:
        print(json.dumps(document, sort_keys=True), flush=True)
    else:
        print('watch ended: %s after %d look%s: %s' % (
            result.ended, result.looks, 's' * (result.looks != 1), result.message))
    return result.exit_status
