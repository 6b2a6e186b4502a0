"""`rollout watch` on simulated traffic: the loop, its limits, notify, the CLI.

The stream stands in for `tfx-canary serve`: before each look it writes the
metrics snapshot file the server would (same format, a new window whenever
rollout.json changes), with requests split by the rollout's percent and
labeled rows right at a chosen accuracy per version. The rollout itself is
real: RolloutController on fake SavedModel folders, so every decision is
applied, written and recorded as in production. tests/rollout/test_watch_e2e.py
runs watch against a real `serve`.
"""
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from rollout import analyze
from rollout import control
from rollout import watch as watch_mod
from rollout.errors import RolloutError
from rollout.live_quality import LiveQuality
from rollout.metrics_snapshot import SNAPSHOT_FORMAT
from tests.conftest import one_error_line, run_cli_quietly, tfx_canary_command

MODEL = 'taxi'
# Only live accuracy decides (the stream sends no latency or predictions), over
# two steps: 50% then promote; no soak time, so the looks can come back to back.
POLICY = {'steps': [50, 100], 'min_requests': {'canary': 100, 'stable': 100},
          'min_window_seconds': 0,
          'live_quality': {'min_labeled': 100, 'accuracy_margin': 0.05, 'alpha': 0.05}}


def _policy(**watch):
    policy = analyze.load_policy()
    for key, value in POLICY.items():
        if isinstance(value, dict):
            policy[key].update(value)
        else:
            policy[key] = value
    policy['watch'].update(watch)
    return policy


def _stage(root, traffic=50):
    """Fake versions 1 (stable) and 2 (canary at `traffic`) under root/serving."""
    controller = control.RolloutController(str(root / 'serving'), MODEL)
    for version in (1, 2):
        src = root / 'exports' / str(version)
        (src / 'variables').mkdir(parents=True)
        (src / 'saved_model.pb').write_text('fake %d' % version)
        controller.stage(str(src), canary_percent=traffic)
    return controller


class Stream:
    """Labeled traffic at fixed accuracies, written as the server's snapshot file."""

    def __init__(self, controller, path, accuracy, requests_per_look=600, seed=0):
        self.controller = controller
        self.path = str(path)
        self.accuracy = accuracy           # {version: accuracy}
        self.requests_per_look = requests_per_look
        self.rng = np.random.default_rng(seed)
        self.rollout = None
        self.window = {}

    def advance(self, *_):
        state = self.controller.load()
        rollout = (state.stable_version, state.canary_version, state.canary_traffic_percent)
        if rollout != self.rollout:        # the server starts a new window
            self.rollout, self.window = rollout, {}
        stable, canary, traffic = rollout
        to_canary = self.rng.binomial(self.requests_per_look, traffic / 100) if canary else 0
        self._serve(stable, self.requests_per_look - to_canary)
        if canary:
            self._serve(canary, to_canary)
        self._write()

    def _serve(self, version, requests):
        entry = self.window.setdefault(version, {'requests': 0, 'quality': LiveQuality()})
        entry['requests'] += requests
        quality = entry['quality']
        quality.labeled += requests
        quality.correct += int(self.rng.binomial(requests, self.accuracy[version]))

    def _write(self):
        stable, canary, traffic = self.rollout
        versions = {str(v): {'requests': e['requests'], 'errors': 0,
                             'quality': e['quality'].to_dict()} for v, e in self.window.items()}
        snapshot = {'format': SNAPSHOT_FORMAT, 'written_at': time.time(), 'models': {MODEL: {
            'window': {'started_at': time.time(), 'seconds': 600.0, 'mode': 'split',
                       'rollout': {'stable': stable, 'canary': canary, 'traffic': traffic},
                       'versions': versions}}}}
        tmp = self.path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(snapshot, f)
        os.replace(tmp, self.path)


def _watch(tmp_path, accuracy, seed=0, failure_limit=1, inconclusive_limit=0, **kwargs):
    """Runs a watch over a fresh stream; (result, looks, controller)."""
    controller = _stage(tmp_path / ('s%d' % seed))
    stream = Stream(controller, tmp_path / ('metrics-%d.json' % seed), accuracy, seed=seed)
    stream.advance()
    looks = []

    def on_look(look):
        looks.append(look)
        stream.advance()

    settings = watch_mod.WatchSettings(0.0, failure_limit, inconclusive_limit)
    watch = watch_mod.Watch(controller, stream.path, _policy(), settings, on_look=on_look,
                            **kwargs)
    return watch.run(), looks, controller


# ---------------------------------------------------------------- decisions

def test_an_equal_canary_is_promoted_through_the_steps(tmp_path):
    result, looks, controller = _watch(tmp_path, {1: 0.85, 2: 0.85}, seed=3,
                                       actor='rollout watch (test)')
    assert result.ended == watch_mod.PROMOTED and result.exit_status == 0
    assert (result.stable_version, result.canary_version) == (2, None)
    assert looks[-1].applied == 'promoted' and looks[-1].outcome == watch_mod.PASSED
    assert all(look.outcome in (watch_mod.PASSED, watch_mod.INCONCLUSIVE) for look in looks)
    last = controller.load().last_event
    assert last['actor'] == 'rollout watch (test)'
    assert 'live accuracy canary' in last['reason']


def test_a_better_canary_is_promoted(tmp_path):
    result, _, _ = _watch(tmp_path, {1: 0.80, 2: 0.88}, seed=4)
    assert result.ended == watch_mod.PROMOTED


def test_a_worse_canary_is_rolled_back_after_the_failure_limit_with_its_numbers(tmp_path):
    result, looks, controller = _watch(tmp_path, {1: 0.85, 2: 0.70}, seed=5, failure_limit=2)
    assert result.ended == watch_mod.ROLLED_BACK and result.exit_status == 1
    assert (result.stable_version, result.canary_version) == (1, None)
    failed = [look for look in looks if look.outcome == watch_mod.FAILED]
    assert len(failed) == 2 and failed[0].applied is None and failed[1].applied == 'rolled_back'
    assert 'failed analysis 1 of 2 in a row' in failed[0].message
    assert 'canary live accuracy' in result.message and 'after 2 failed analyses' in result.message
    event = controller.load().last_event
    assert event['event'] == 'rolled_back' and 'live accuracy canary' in event['reason']


def test_a_hold_between_failed_analyses_starts_the_failure_count_again():
    counts = watch_mod._Counts()  # pylint: disable=protected-access
    for outcome in (watch_mod.FAILED, watch_mod.UNAVAILABLE):
        counts.count(outcome)
    assert (counts.failures, counts.inconclusive) == (1, 1)   # unavailable: neither
    counts.count(watch_mod.INCONCLUSIVE)
    assert (counts.failures, counts.inconclusive) == (0, 2)
    counts.count(watch_mod.PASSED)
    assert (counts.failures, counts.inconclusive) == (0, 0)


# ---------------------------------------------------------------- by simulation

def _rollbacks(tmp_path, accuracy, seeds, failure_limit=1):
    results = [_watch(tmp_path, accuracy, seed=seed, failure_limit=failure_limit)[0]
               for seed in seeds]
    return sum(r.ended == watch_mod.ROLLED_BACK for r in results), results


def test_false_rollbacks_of_an_equal_canary_stay_under_alpha(tmp_path):
    """200 watches of equal models (85%), a look per 600 requests until promoted:
    the sequential test keeps P(ever rolled back) <= alpha 0.05 however many
    looks a watch takes; a fixed-horizon test at each look would not."""
    rolled_back, results = _rollbacks(tmp_path, {1: 0.85, 2: 0.85}, range(200))
    assert rolled_back / 200 <= 0.05, rolled_back
    assert sum(r.ended == watch_mod.PROMOTED for r in results) == 200 - rolled_back
    assert max(r.looks for r in results) > 3   # several looks each: repeated testing


def test_power_a_10_point_drop_is_rolled_back(tmp_path):
    """A drop of the margin itself (85% -> 80% at margin 0.05) is never rolled back, by
    design;
    a 10-point drop, 85% -> 75%, is rolled back in >= 95% of 100 watches."""
    rolled_back, results = _rollbacks(tmp_path, {1: 0.85, 2: 0.75}, range(100))
    assert rolled_back >= 95, rolled_back
    assert all(r.ended in (watch_mod.ROLLED_BACK, watch_mod.PROMOTED) for r in results)


# ---------------------------------------------------------------- limits and changes

def _closed_port():
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_unreadable_metrics_are_inconclusive_and_pause_at_the_limit(tmp_path):
    controller = _stage(tmp_path)
    before = controller.load()
    looks = []
    settings = watch_mod.WatchSettings(0.0, 1, 3)
    url = 'http://127.0.0.1:%d' % _closed_port()
    result = watch_mod.Watch(controller, url, _policy(), settings, on_look=looks.append).run()
    assert result.ended == watch_mod.PAUSED and result.exit_status == 3
    assert [look.outcome for look in looks] == [watch_mod.UNAVAILABLE] * 3
    assert looks[0].message.startswith('metrics unavailable (counted as inconclusive): '
                                       'cannot read metrics from %s' % url)
    assert [look.failures_in_a_row for look in looks] == [0, 0, 0]
    assert '3 inconclusive analyses in a row' in result.message
    assert controller.load() == before           # paused: left as it was


def test_a_canary_promoted_by_someone_else_ends_the_watch(tmp_path):
    controller = _stage(tmp_path)
    stream = Stream(controller, tmp_path / 'metrics.json', {1: 0.85, 2: 0.85})
    stream.advance()

    def on_look(look):
        controller.promote(reason='by hand')
        stream.advance()

    settings = watch_mod.WatchSettings(0.0, 1, 0)
    policy = _policy()
    policy['live_quality']['min_labeled'] = 10 ** 6      # the first look holds
    result = watch_mod.Watch(controller, stream.path, policy, settings, on_look=on_look).run()
    assert result.ended == watch_mod.CHANGED and result.exit_status == 4
    assert 'canary v2 is no longer live' in result.message
    assert controller.load().last_event['reason'] == 'by hand'


def test_a_decision_overtaken_by_another_command_is_not_applied(tmp_path):
    """Between the look's read and its apply a person sets 30%: compare-and-set
    refuses the step to the next phase, and the watch ends saying why."""
    controller = _stage(tmp_path)

    class Racing(control.RolloutController):
        def set_traffic(self, percent, reason='', actor=None, expect=None):
            super().set_traffic(30, reason='a person')
            return super().set_traffic(percent, reason, actor, expect)

    racing = Racing(controller.serving_root, MODEL)
    stream = Stream(racing, tmp_path / 'metrics.json', {1: 0.85, 2: 0.85}, seed=1)
    stream.advance()
    policy = _policy()
    policy['steps'] = [50, 75, 100]
    result = watch_mod.Watch(racing, stream.path, policy, watch_mod.WatchSettings(0.0, 1, 0),
                             on_look=stream.advance).run()
    assert result.ended == watch_mod.CHANGED
    assert 'not applied' in result.message and 'at 30%' in result.message
    state = controller.load()
    assert (state.canary_version, state.canary_traffic_percent) == (2, 30)
    assert state.last_event['reason'] == 'a person'


# ---------------------------------------------------------------- the CLI

@pytest.mark.parametrize('policy, flags, message', [
    ('watch: {failure_limit: 0}', [], 'policy watch.failure_limit must be a whole number >= 1'),
    ('watch: {interval_seconds: -1}', [], 'policy watch.interval_seconds must be a number'),
    ('watch: {inconclusive_limit: 1.5}', [], 'watch.inconclusive_limit must be a whole number'),
    ('watch: {intervall: 5}', [], "unknown policy key 'intervall' in watch."),
    ('', ['--interval', '0'], '--interval must be a number >= 0.1'),
    ('', ['--failure-limit', '0'], '--failure-limit must be a whole number >= 1'),
    ('', ['--notify', 'ftp://hooks'], '--notify must be an http:// or https:// URL'),
])
def test_bad_watch_settings_are_one_error_line_and_change_nothing(tmp_path, capsys, policy,
                                                                 flags, message):
    from runners import cli
    controller = _stage(tmp_path)
    before = controller.load()
    path = tmp_path / 'policy.yaml'
    path.write_text(policy)
    code = cli.main(['rollout', 'watch', '--serving-root', str(tmp_path / 'serving'),
                     '--policy', str(path)] + flags)
    out, err = capsys.readouterr()
    assert message in one_error_line(code, out, err)
    assert controller.load() == before


class _Hook(http.server.BaseHTTPRequestHandler):
    """A webhook on loopback that fails its first `fail_first` deliveries."""
    received, fail_first = [], 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers['Content-Length']))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
        else:
            _Hook.received.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    _Hook.received, _Hook.fail_first = [], 2
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield 'http://127.0.0.1:%d/rollouts' % server.server_address[1]
    server.shutdown()


def test_cli_applies_each_decision_and_notifies_it(tmp_path, hook):
    """Through `tfx-canary rollout watch --notify`: the webhook's first two
    answers are 503s, retried; every look and the end arrive as JSON."""
    controller = _stage(tmp_path)
    stream = Stream(controller, tmp_path / 'metrics.json', {1: 0.85, 2: 0.85}, seed=2)
    stream.advance()
    policy = tmp_path / 'policy.yaml'
    policy.write_text(json.dumps(POLICY))
    stop = threading.Event()

    def feed():   # the server's snapshot, rewritten while watch looks
        while not stop.wait(0.05):
            stream.advance()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        code, out = run_cli_quietly([
            'rollout', 'watch', '--serving-root', str(tmp_path / 'serving'), '--metrics',
            stream.path, '--policy', str(policy), '--interval', '0.2', '--notify', hook])
    finally:
        stop.set()
        feeder.join()
    assert code == 0, out
    assert out.startswith('watching taxi canary v2 at 50% (stable v1): every 0.2 s')
    assert 'PROMOTE v2' in out and 'watch ended: promoted' in out
    assert controller.load().stable_version == 2
    kinds = [d['kind'] for d in _Hook.received]
    assert kinds[-1] == 'end' and set(kinds[:-1]) == {'look'}
    end = _Hook.received[-1]
    assert (end['ended'], end['exit_status'], end['model']) == ('promoted', 0, MODEL)
    applied = [d for d in _Hook.received if d['kind'] == 'look' and d['applied']]
    assert applied[-1]['applied'] == 'promoted'
    assert applied[-1]['decision']['decision'] == 'promote'
    assert any(c['check'] == 'live accuracy' for c in applied[-1]['decision']['checks'])


def test_a_webhook_that_never_answers_does_not_hold_up_the_rollout(tmp_path, caplog):
    notifier = watch_mod.Notifier('http://127.0.0.1:%d/x' % _closed_port(),
                                  backoff_seconds=0.01)
    started = time.monotonic()
    for look in range(3):
        notifier.post({'model': MODEL, 'look': look, 'message': 'HOLD'})
    assert time.monotonic() - started < 0.5      # post() only queues
    assert notifier.close(timeout=10)
    assert (notifier.delivered, notifier.failed) == (0, 3)
    assert 'not delivered after 3 attempts' in caplog.text and 'taxi look 2: HOLD' in caplog.text


def test_ctrl_c_stops_between_looks_and_leaves_the_rollout_as_it_was(tmp_path):
    controller = _stage(tmp_path)
    before = open(controller.state_path, 'rb').read()
    process = subprocess.Popen(
        tfx_canary_command() + ['rollout', 'watch', '--serving-root', str(tmp_path / 'serving'),
                                '--metrics', 'http://127.0.0.1:%d' % _closed_port(),
                                '--interval', '0.2', '--inconclusive-limit', '0'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout.readline().startswith('watching taxi canary v2')
        assert ' look 1: metrics unavailable' in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, out
    assert 'watch ended: interrupted' in out and 'Traceback' not in out
    assert open(controller.state_path, 'rb').read() == before
