"""`tfx-canary rollout analyze`: canary vs. stable on live metrics -> promote/step/hold/rollback.

Reads the metrics snapshot `tfx-canary serve` writes (or serves), compares the
canary with stable on error rate, p99 latency, prediction shift and, in shadow
mode, agreement, against a policy (rollout/default_policy.yaml, overridable
key by key), and decides:

* rollback      - a check failed;
* set-traffic N - every check passed: the next phase of the policy's steps;
* promote       - every check passed and the next step is 100;
* hold          - not enough evidence yet (requests, soak time), metrics
                  stale or not about the current rollout, or shadow checks
                  passed (the canary has no live traffic to step up yet).

With --apply the decision is carried out through RolloutController, so it is
written and audited like any other rollout command, with the numbers in the
history's reason.
"""
import dataclasses
import json
import os
import time
from typing import Optional, Tuple

import yaml

from rollout import sequential
from rollout import stats
from rollout.errors import RolloutError
from rollout.live_quality import QUALITY_KEY, LiveQuality
from rollout.metrics_snapshot import SNAPSHOT_FILE, load_snapshot, snapshot_path

DEFAULT_POLICY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'default_policy.yaml')

PROMOTE = 'promote'
SET_TRAFFIC = 'set-traffic'
HOLD = 'hold'
ROLLBACK = 'rollback'


# ---------------------------------------------------------------- policy

def _read_structured(path, what):
    """A YAML or (by extension) JSON file's content."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        raise RolloutError('cannot read %s %s: %s' % (what, path, e.strerror)) from None
    try:
        return json.loads(text) if path.endswith('.json') else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise RolloutError('%s %s is not valid JSON: %s' % (what, path, e)) from None
    except yaml.YAMLError as e:
        raise RolloutError('%s %s is not valid YAML: %s'
                           % (what, path, str(e).replace('\n', ' '))) from None


def _merge(base, override, where, path):
    for key, value in override.items():
        if key not in base:
            raise RolloutError('%s: unknown policy key %r%s (known: %s)'
                               % (path, key, ' in ' + where if where else '',
                                  ', '.join(sorted(base))))
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise RolloutError('%s: policy key %r must be a mapping, got %r'
                                   % (path, where + key, value))
            _merge(base[key], value, where + key + '.', path)
        else:
            base[key] = value


def _check_policy(policy, path):
    def number(value, name, low=0.0, high=None):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                high is not None and value > high):
            bound = 'from %g to %g' % (low, high) if high is not None else '>= %g' % low
            raise RolloutError('%s: policy %s must be a number %s, got %r'
                               % (path, name, bound, value))

    steps = policy['steps']
    if (not isinstance(steps, list) or not steps
            or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 100
                   for s in steps)
            or steps != sorted(set(steps)) or steps[-1] != 100):
        raise RolloutError('%s: policy steps must be increasing whole percents ending with 100 '
                           '(100 = promote), e.g. [5, 25, 50, 100]; got %r' % (path, steps))
    for name in ('canary', 'stable'):
        number(policy['min_requests'][name], 'min_requests.' + name)
    number(policy['min_window_seconds'], 'min_window_seconds')
    number(policy['max_snapshot_age_seconds'], 'max_snapshot_age_seconds')
    number(policy['error_rate']['max'], 'error_rate.max', 0, 1)
    number(policy['error_rate']['max_increase'], 'error_rate.max_increase', 0, 1)
    number(policy['latency_p99']['max_ratio'], 'latency_p99.max_ratio', 1)
    number(policy['latency_p99']['min_increase_seconds'], 'latency_p99.min_increase_seconds')
    number(policy['prediction_shift']['max_mean_shift'], 'prediction_shift.max_mean_shift', 0, 1)
    number(policy['prediction_shift']['max_js_divergence'],
           'prediction_shift.max_js_divergence', 0, 1)
    number(policy['shadow']['min_comparisons'], 'shadow.min_comparisons')
    number(policy['shadow']['min_agreement'], 'shadow.min_agreement', 0, 1)
    number(policy['shadow']['max_mean_abs_diff'], 'shadow.max_mean_abs_diff', 0, 1)
    number(policy['sample_ratio']['max_p_value_for_mismatch'],
           'sample_ratio.max_p_value_for_mismatch', 0, 1)
    quality = policy['live_quality']
    number(quality['min_labeled'], 'live_quality.min_labeled')
    number(quality['accuracy_margin'], 'live_quality.accuracy_margin', 0, 1)
    number(quality['alpha'], 'live_quality.alpha', 0, 1)
    if quality['alpha'] in (0, 1):
        raise RolloutError('%s: policy live_quality.alpha must be strictly between 0 and 1 '
                           '(the false-rollback rate of equal models), got %r'
                           % (path, quality['alpha']))
    if not isinstance(quality['required'], bool):
        raise RolloutError('%s: policy live_quality.required must be true or false, got %r'
                           % (path, quality['required']))


def load_policy(path=None):
    """The default policy, overridden key by key by the file at `path`."""
    policy = _read_structured(DEFAULT_POLICY, 'default policy')
    if path:
        override = _read_structured(path, 'policy file')
        if override is None:
            override = {}
        if not isinstance(override, dict):
            raise RolloutError('policy file %s must hold a mapping of policy keys (see %s)'
                               % (path, DEFAULT_POLICY))
        _merge(policy, override, '', path)
    _check_policy(policy, path or DEFAULT_POLICY)
    return policy


# ---------------------------------------------------------------- results

@dataclasses.dataclass(frozen=True)
class Check:
    """One row of the analysis: a measure for canary (and stable) against its limit."""
    check: str                 # 'error rate', 'p99 latency', ...
    result: str                # 'ok', 'FAIL', 'wait' (not enough evidence) or 'n/a'
    canary: object = None
    stable: object = None
    limit: str = ''
    note: str = ''


@dataclasses.dataclass(frozen=True)
class Decision:
    """What `rollout analyze` decided for one model, and why."""
    model: str
    stable_version: int
    canary_version: int
    traffic: int                         # the canary's percent now
    decision: str                        # PROMOTE, SET_TRAFFIC, HOLD or ROLLBACK
    target: Optional[int]                # traffic after it (None for a rollback)
    steps: Tuple[int, ...]               # the policy's phases
    checks: Tuple[Check, ...]
    hold_reasons: Tuple[str, ...]
    failures: Tuple[str, ...]
    snapshot_age_seconds: float
    mode: Optional[str] = None           # None: the snapshot had no window for the model
    window_seconds: Optional[float] = None

    def to_dict(self):
        """The JSON `rollout analyze --json` prints (mode/window only when measured)."""
        data = dataclasses.asdict(self)
        for key in ('mode', 'window_seconds'):
            if data[key] is None:
                del data[key]
        return data


class _Findings:
    """What the checks found so far (private, mutable while analyze() runs)."""

    def __init__(self):
        self.checks, self.holds, self.failures = [], [], []

    def add(self, name, result, canary=None, stable=None, limit='', note=''):
        self.checks.append(Check(name, result, canary, stable, limit, note))



# ---------------------------------------------------------------- analysis

def _version(window, version):
    return (window.get('versions') or {}).get(str(version))


def _error_rate(entry):
    if not entry or not entry['requests']:
        return None
    return entry['errors'] / entry['requests']


def _p99(entry):
    if not entry or not entry.get('latency_seconds'):
        return None
    return stats.Histogram.from_dict(entry['latency_seconds']).quantile(0.99)


def _prediction(entry):
    if not entry or not entry.get('predictions'):
        return None
    return stats.Histogram.from_dict(entry['predictions'])


def _hold_if_stale(age, policy, found):
    if age > policy['max_snapshot_age_seconds']:
        found.holds.append('metrics snapshot is %.0f s old (limit %g s): is the server '
                           'running?' % (age, policy['max_snapshot_age_seconds']))


def _hold_unless_current(state, window, found):
    """True if the window measured the rollout that rollout.json describes now."""
    served = window.get('rollout') or {}
    served = (served.get('stable'), served.get('canary'), served.get('traffic'))
    now_serving = (state.stable_version, state.canary_version, state.canary_traffic_percent)
    if served == now_serving:
        return True
    found.holds.append('the metrics are for stable v%s / canary v%s at %s%%, but rollout.json '
                       'says v%s / v%s at %s%%: wait for the server to pick up the change'
                       % (served + now_serving))
    return False


def _check_evidence(canary, stable, window_seconds, policy, found):
    n_canary = canary['requests'] if canary else 0
    n_stable = stable['requests'] if stable else 0
    need = policy['min_requests']
    enough = n_canary >= need['canary'] and n_stable >= need['stable']
    found.add('requests', 'ok' if enough else 'wait', n_canary, n_stable,
              '>= %d canary, %d stable' % (need['canary'], need['stable']))
    if not enough:
        found.holds.append('not enough requests yet: canary %d of %d, stable %d of %d'
                           % (n_canary, need['canary'], n_stable, need['stable']))
    if window_seconds < policy['min_window_seconds']:
        found.holds.append('soaking: %.0f s of %g s at this step'
                           % (window_seconds, policy['min_window_seconds']))


def _check_error_rate(canary, stable, rule, found):
    rate_c, rate_s = _error_rate(canary), _error_rate(stable)
    if rate_c is None or rate_s is None:
        found.add('error rate', 'n/a', rate_c, rate_s, note='no requests')
        return
    bad = rate_c > rule['max'] or rate_c - rate_s > rule['max_increase']
    found.add('error rate', 'FAIL' if bad else 'ok', rate_c, rate_s,
              '<= %g%%, stable + %g%%' % (100 * rule['max'], 100 * rule['max_increase']))
    if bad:
        found.failures.append('canary error rate %.2f%% vs stable %.2f%% (limit %.2f%%, '
                              '+%.2f%%)' % (100 * rate_c, 100 * rate_s, 100 * rule['max'],
                                            100 * rule['max_increase']))


def _check_latency(canary, stable, rule, found):
    p99_c, p99_s = _p99(canary), _p99(stable)
    if p99_c is None or p99_s is None:
        found.add('p99 latency', 'n/a', p99_c, p99_s, note='no successful calls')
        return
    bad = p99_c > p99_s * rule['max_ratio'] and p99_c - p99_s > rule['min_increase_seconds']
    found.add('p99 latency', 'FAIL' if bad else 'ok', p99_c, p99_s,
              '<= %gx stable or + %g ms' % (rule['max_ratio'],
                                            1000 * rule['min_increase_seconds']))
    if bad:
        found.failures.append('canary p99 latency %.1f ms vs stable %.1f ms (limit %gx and '
                              '+%g ms)' % (1000 * p99_c, 1000 * p99_s, rule['max_ratio'],
                                           1000 * rule['min_increase_seconds']))


def _check_predictions(canary, stable, rule, found):
    """Prediction shift (split mode: two arms of one population; in shadow mode
    the same rows, which the agreement checks cover better)."""
    hist_c, hist_s = _prediction(canary), _prediction(stable)
    if hist_c is None or hist_s is None or not hist_c.count or not hist_s.count:
        found.add('mean prediction', 'n/a', note='no predictions recorded')
        return
    mean_c, mean_s = hist_c.mean(), hist_s.mean()
    bad = abs(mean_c - mean_s) > rule['max_mean_shift']
    found.add('mean prediction', 'FAIL' if bad else 'ok', mean_c, mean_s,
              '|diff| <= %g' % rule['max_mean_shift'])
    if bad:
        found.failures.append('mean prediction moved by %.3f (%.3f -> %.3f; limit %g)'
                              % (abs(mean_c - mean_s), mean_s, mean_c,
                                 rule['max_mean_shift']))
    divergence = stats.js_divergence(hist_c.distribution(), hist_s.distribution())
    bad = divergence > rule['max_js_divergence']
    found.add('prediction JS divergence', 'FAIL' if bad else 'ok', divergence, None,
              '<= %g' % rule['max_js_divergence'])
    if bad:
        found.failures.append('prediction distribution diverged: JS %.3f (limit %g)'
                              % (divergence, rule['max_js_divergence']))


def _check_shadow(window, mode, rule, found):
    shadow = window.get('shadow') or {}
    compared = shadow.get('comparisons', 0)
    if mode != 'shadow':
        found.add('shadow agreement', 'n/a', note='split mode')
        return
    if compared < rule['min_comparisons']:
        found.add('shadow agreement', 'wait', compared, None,
                  '>= %d rows' % rule['min_comparisons'])
        found.holds.append('not enough shadow comparisons yet: %d of %d'
                           % (compared, rule['min_comparisons']))
        return
    agreement = shadow['agreements'] / compared
    bad = agreement < rule['min_agreement']
    found.add('shadow agreement', 'FAIL' if bad else 'ok', agreement, None,
              '>= %g%%' % (100 * rule['min_agreement']))
    if bad:
        found.failures.append('canary agrees with stable on %.1f%% of rows (limit %.1f%%)'
                              % (100 * agreement, 100 * rule['min_agreement']))
    diff = shadow.get('abs_diff_mean')
    bad = diff is not None and diff > rule['max_mean_abs_diff']
    found.add('shadow mean |diff|', 'FAIL' if bad else 'ok', diff, None,
              '<= %g' % rule['max_mean_abs_diff'])
    if bad:
        found.failures.append('mean |p_stable - p_canary| is %.3f (limit %g)'
                              % (diff, rule['max_mean_abs_diff']))


def _check_sample_ratio(canary, stable, mode, traffic, rule, found):
    """Split mode: does the canary get its configured share of requests?"""
    if mode == 'shadow':
        found.add('sample ratio', 'n/a', note='shadow mode: both see every request')
        return
    result = sequential.sample_ratio(canary['requests'] if canary else 0,
                                     stable['requests'] if stable else 0, traffic)
    if result is None:
        found.add('sample ratio', 'n/a', note='no requests')
        return
    limit = rule['max_p_value_for_mismatch']
    broken = result.p_value < limit
    found.add('sample ratio', 'HOLD' if broken else 'ok', result.observed_share, None,
              'expected %g%%: p %.2g >= %g (chi2 %.1f)' % (traffic, result.p_value, limit,
                                                           result.chi2))
    if broken:
        found.holds.append(
            'sample ratio mismatch: the split is broken, so no comparison can be trusted: '
            'canary got %.2f%% of %d requests, expected %g%% (chi2 %.1f, p %.2g < %g); '
            'check the router and sticky keys' % (
                100 * result.observed_share, result.canary + result.stable, traffic,
                result.chi2, result.p_value, limit))


def _quality(entry, version, found):
    data = (entry or {}).get(QUALITY_KEY)
    if data is None:
        return None
    try:
        return LiveQuality.from_dict(data, where='v%s %s' % (version, QUALITY_KEY))
    except ValueError as e:
        found.holds.append('live quality unreadable in the metrics: %s' % e)
        return False


def _check_live_quality(state, canary, stable, rule, found):
    """Canary vs stable accuracy on labeled traffic: the sequential test."""
    q_c = _quality(canary, state.canary_version, found)
    q_s = _quality(stable, state.stable_version, found)
    if q_c is False or q_s is False:
        found.add('live accuracy', 'wait', note='quality entry unreadable')
        return
    n_c = q_c.labeled if q_c else 0
    n_s = q_s.labeled if q_s else 0
    need = rule['min_labeled']
    if not n_c and not n_s:
        found.add('live accuracy', 'wait' if rule['required'] else 'n/a',
                  note='no labeled traffic yet')
        if rule['required']:
            found.holds.append('no labeled traffic yet and policy live_quality.required is '
                               'true: send labels (feedback API or bulk labels)')
        return
    if n_c < need or n_s < need:
        found.add('labeled rows', 'wait', n_c, n_s, '>= %d each' % need)
        found.holds.append('waiting for labels: canary %d of %d, stable %d of %d labeled rows'
                           % (n_c, need, n_s, need))
        return
    found.add('labeled rows', 'ok', n_c, n_s, '>= %d each' % need)
    margin, alpha = rule['accuracy_margin'], rule['alpha']
    test = sequential.accuracy_test(q_c.correct, n_c, q_s.correct, n_s, margin, alpha)
    interval = '%+.2f%% [%+.2f%%, %+.2f%%]' % (100 * test.difference, 100 * test.low,
                                             100 * test.high)
    result = {sequential.WORSE: 'FAIL', sequential.NOT_WORSE: 'ok'}.get(test.decision, 'wait')
    found.add('live accuracy', result, test.canary, test.stable, 'diff > -%g%%' % (100 * margin),
              'diff %s always-valid %d%%' % (interval, round(100 * (1 - alpha))))
    if test.decision == sequential.WORSE:
        found.failures.append(
            'canary live accuracy %.2f%% vs stable %.2f%% on %d/%d labeled rows: difference '
            '%s (always-valid %g%% interval) is entirely below the -%g%% margin'
            % (100 * test.canary, 100 * test.stable, n_c, n_s, interval,
               100 * (1 - alpha), 100 * margin))
    elif test.decision == sequential.INCONCLUSIVE:
        found.holds.append(
            'live accuracy inconclusive, waiting for labels: canary %.2f%% vs stable %.2f%% '
            'on %d/%d labeled rows, difference %s includes -%g%%'
            % (100 * test.canary, 100 * test.stable, n_c, n_s, interval, 100 * margin))
    auc = sequential.auc_difference(
        q_c.auc(), q_c.positive_scores.count, q_c.negative_scores.count,
        q_s.auc(), q_s.positive_scores.count, q_s.negative_scores.count, alpha)
    if auc is None:
        found.add('live AUC', 'n/a', note='an arm lacks positives or negatives')
    else:
        found.add('live AUC', 'info', auc.canary, auc.stable, 'not decided on',
                  'diff %+.3f [%+.3f, %+.3f] fixed-horizon %d%%'
                  % (auc.difference, auc.low, auc.high, round(100 * (1 - alpha))))


def _run_checks(state, window, mode, window_seconds, policy, found):
    canary = _version(window, state.canary_version)
    stable = _version(window, state.stable_version)
    _check_evidence(canary, stable, window_seconds, policy, found)
    _check_sample_ratio(canary, stable, mode, state.canary_traffic_percent,
                        policy['sample_ratio'], found)
    _check_live_quality(state, canary, stable, policy['live_quality'], found)
    _check_error_rate(canary, stable, policy['error_rate'], found)
    _check_latency(canary, stable, policy['latency_p99'], found)
    _check_predictions(canary, stable, policy['prediction_shift'], found)
    _check_shadow(window, mode, policy['shadow'], found)


def analyze(state, snapshot, policy, now=None):
    """Decides what to do with the live canary; returns a Decision.

    state: the RolloutState from rollout.json; snapshot: load_snapshot()'s
    dict; policy: load_policy()'s dict.
    """
    if state.canary_version is None:
        raise RolloutError('%s has no live canary (stable is v%s): nothing to analyze; the '
                           'pipeline stages the next one'
                           % (state.model_name, state.stable_version))
    now = time.time() if now is None else now
    age = now - snapshot.get('written_at', 0)
    found = _Findings()
    _hold_if_stale(age, policy, found)
    window = ((snapshot.get('models') or {}).get(state.model_name) or {}).get('window')
    if not window:
        found.holds.append('the metrics have no window for model %s' % state.model_name)
        return _decide(state, policy, found, age)
    mode = window.get('mode', 'split')
    window_seconds = window.get('seconds', 0.0) + max(age, 0.0)
    if _hold_unless_current(state, window, found):
        _run_checks(state, window, mode, window_seconds, policy, found)
    return _decide(state, policy, found, age, mode, window_seconds)


def _decide(state, policy, found, age, mode=None, window_seconds=None):
    """Turns checks into the decision: failures win, then holds, then the next step."""
    traffic = state.canary_traffic_percent
    holds = list(found.holds)
    if found.failures and not _only_waiting(found.checks):
        decision, target = ROLLBACK, None
    elif holds or found.failures:
        decision, target = HOLD, traffic
        if found.failures:
            holds.append('checks fail but the evidence is still thin: '
                         + '; '.join(found.failures))
    elif mode == 'shadow':
        decision, target = HOLD, traffic
        holds.append('shadow checks pass: the canary has no live traffic in shadow mode; '
                     'restart the server with --mode split to start the phased rollout at '
                     '%d%%' % traffic)
    else:
        following = [s for s in policy['steps'] if s > traffic]
        target = min(following[0] if following else 100, 100)
        decision = PROMOTE if target >= 100 else SET_TRAFFIC
    return Decision(
        model=state.model_name, stable_version=state.stable_version,
        canary_version=state.canary_version, traffic=traffic, decision=decision,
        target=target, steps=tuple(policy['steps']), checks=tuple(found.checks),
        hold_reasons=tuple(holds), failures=tuple(found.failures),
        snapshot_age_seconds=age, mode=mode, window_seconds=window_seconds)


def _only_waiting(checks):
    """True if failures were measured on fewer requests than the policy requires.

    A canary is never rolled back on a handful of requests, but a
    metrics-for-another-rollout or stale-snapshot hold does not count here:
    those return before any check runs.
    """
    for check in checks:
        if check.check == 'requests':
            return check.result == 'wait'
    return False


# ---------------------------------------------------------------- output

def _fmt(name, value):
    if value is None:
        return '-'
    if isinstance(value, int) and not isinstance(value, bool):
        return '{:,}'.format(value)
    if name == 'error rate':
        return '%.2f%%' % (100 * value)
    if name == 'p99 latency':
        return '%.1f ms' % (1000 * value)
    if name in ('shadow agreement', 'sample ratio'):
        return '%.1f%%' % (100 * value)
    if name == 'live accuracy':
        return '%.2f%%' % (100 * value)
    return '%.3f' % value


def describe_decision(decision):
    if decision.decision == PROMOTE:
        return 'PROMOTE v%d (all checks pass; next step is 100%%)' % decision.canary_version
    if decision.decision == SET_TRAFFIC:
        return 'SET-TRAFFIC %d%% (all checks pass; next of steps %s)' % (
            decision.target, ' -> '.join(map(str, decision.steps)))
    if decision.decision == ROLLBACK:
        return 'ROLLBACK v%d: %s' % (decision.canary_version, '; '.join(decision.failures))
    return 'HOLD at %d%%: %s' % (decision.traffic, '; '.join(decision.hold_reasons))


def format_decision(decision):
    lines = ['%s: canary v%d at %d%% vs stable v%d (%s mode, window %.0f s)'
             % (decision.model, decision.canary_version, decision.traffic,
                decision.stable_version, decision.mode or '?', decision.window_seconds or 0.0)]
    rows = [('check', 'canary', 'stable', 'limit', 'result')]
    for c in decision.checks:
        rows.append((c.check, _fmt(c.check, c.canary), _fmt(c.check, c.stable),
                     '; '.join(x for x in (c.limit, c.note) if x), c.result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        lines.append('  ' + '  '.join(
            r[i].rjust(widths[i]) if i in (1, 2) else r[i].ljust(widths[i])
            for i in range(5)).rstrip())
    lines.append('decision: ' + describe_decision(decision))
    return '\n'.join(lines)


def reason_text(decision, reason=''):
    """The history reason for an applied decision: the numbers that justified it."""
    parts = ['rollout analyze: ' + describe_decision(decision)]
    for c in decision.checks:
        if c.result not in ('ok', 'FAIL') or c.check == 'requests':
            continue
        if c.stable is None:  # a single measure (divergence, agreement)
            parts.append('%s %s' % (c.check, _fmt(c.check, c.canary)))
        else:
            parts.append('%s canary %s stable %s' % (c.check, _fmt(c.check, c.canary),
                                                     _fmt(c.check, c.stable)))
        if c.note:
            parts[-1] += ' (%s)' % c.note
    text = '; '.join(parts)
    return '%s (%s)' % (reason, text) if reason else text


def apply(controller, decision, reason='', actor=None):
    """Carries out the decision through RolloutController; None for hold.

    Only if rollout.json still serves what was analyzed (compare-and-set under
    the rollout lock): else RolloutChangedError and nothing changes.
    """
    why = reason_text(decision, reason)
    expect = (decision.stable_version, decision.canary_version, decision.traffic)
    if decision.decision == PROMOTE:
        return controller.promote(reason=why, actor=actor, expect=expect)
    if decision.decision == SET_TRAFFIC:
        return controller.set_traffic(decision.target, reason=why, actor=actor, expect=expect)
    if decision.decision == ROLLBACK:
        return controller.rollback(reason=why, actor=actor, expect=expect)
    return None


# ---------------------------------------------------------------- CLI glue

def add_source_arguments(parser):
    """--metrics and --policy: what `rollout analyze` and `rollout watch` read."""
    parser.add_argument(
        '--metrics', default=None, metavar='URL|FILE',
        help='metrics snapshot: the server URL (e.g. http://127.0.0.1:8501) or a file '
             '(default: <serving-root>/<model>/%s, written by `tfx-canary serve`)'
             % SNAPSHOT_FILE)
    parser.add_argument(
        '--policy', default=None, metavar='FILE',
        help='YAML/JSON policy overriding keys of rollout/default_policy.yaml (its watch: '
             'section is read by `rollout watch`)')


def add_arguments(parser):
    add_source_arguments(parser)
    parser.add_argument('--apply', action='store_true',
                        help='carry out the decision (promote, set-traffic or rollback)')
    parser.add_argument('--json', action='store_true', help='print the decision as JSON')


def run(args, controller, print_result):
    """The `rollout analyze` handler body; `print_result` prints an applied change."""
    policy = load_policy(args.policy)
    source = args.metrics or snapshot_path(controller.serving_root, controller.model_name)
    snapshot = load_snapshot(source)
    decision = analyze(controller.load(), snapshot, policy)
    result = apply(controller, decision, args.reason) if args.apply else None
    if args.json:
        print(json.dumps(dict(decision.to_dict(), metrics_source=source,
                              applied=None if result is None else result.event),
                         indent=2, sort_keys=True))
    else:
        print(format_decision(decision))
        if result is not None:
            print_result(result)
        elif args.apply:
            print('nothing applied (hold)')
    return 0
