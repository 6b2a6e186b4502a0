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
import json
import os
import time

import yaml

from rollout import stats
from rollout.errors import RolloutError
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


def _check(name, result, canary=None, stable=None, limit='', note=''):
    return {'check': name, 'result': result, 'canary': canary, 'stable': stable,
            'limit': limit, 'note': note}


def analyze(state, snapshot, policy, now=None):
    """Decides what to do with the live canary; returns a JSON-ready dict.

    state: the RolloutState from rollout.json; snapshot: load_snapshot()'s
    dict; policy: load_policy()'s dict.
    """
    now = time.time() if now is None else now
    model = state.model_name
    if state.canary_version is None:
        raise RolloutError('%s has no live canary (stable is v%s): nothing to analyze; the '
                           'pipeline stages the next one' % (model, state.stable_version))
    stable_v, canary_v = state.stable_version, state.canary_version
    traffic = state.canary_traffic_percent
    decision = {'model': model, 'stable_version': stable_v, 'canary_version': canary_v,
                'traffic': traffic, 'checks': [], 'hold_reasons': [], 'failures': []}
    holds, failures, checks = decision['hold_reasons'], decision['failures'], decision['checks']

    age = now - snapshot.get('written_at', 0)
    decision['snapshot_age_seconds'] = age
    if age > policy['max_snapshot_age_seconds']:
        holds.append('metrics snapshot is %.0f s old (limit %g s): is the server running?'
                     % (age, policy['max_snapshot_age_seconds']))
    window = ((snapshot.get('models') or {}).get(model) or {}).get('window')
    if not window:
        holds.append('the metrics have no window for model %s' % model)
        return _finish(decision, policy)
    mode = window.get('mode', 'split')
    decision['mode'] = mode
    decision['window_seconds'] = window.get('seconds', 0.0) + max(age, 0.0)
    served = window.get('rollout') or {}
    if (served.get('stable'), served.get('canary'), served.get('traffic')) != (
            stable_v, canary_v, traffic):
        holds.append('the metrics are for stable v%s / canary v%s at %s%%, but rollout.json '
                     'says v%s / v%s at %s%%: wait for the server to pick up the change'
                     % (served.get('stable'), served.get('canary'), served.get('traffic'),
                        stable_v, canary_v, traffic))
        return _finish(decision, policy)

    canary, stable = _version(window, canary_v), _version(window, stable_v)
    n_canary = canary['requests'] if canary else 0
    n_stable = stable['requests'] if stable else 0
    need = policy['min_requests']
    enough = n_canary >= need['canary'] and n_stable >= need['stable']
    checks.append(_check('requests', 'ok' if enough else 'wait', n_canary, n_stable,
                         '>= %d canary, %d stable' % (need['canary'], need['stable'])))
    if not enough:
        holds.append('not enough requests yet: canary %d of %d, stable %d of %d'
                     % (n_canary, need['canary'], n_stable, need['stable']))
    if decision['window_seconds'] < policy['min_window_seconds']:
        holds.append('soaking: %.0f s of %g s at this step'
                     % (decision['window_seconds'], policy['min_window_seconds']))

    # Error rate.
    rule = policy['error_rate']
    rate_c, rate_s = _error_rate(canary), _error_rate(stable)
    if rate_c is None or rate_s is None:
        checks.append(_check('error rate', 'n/a', rate_c, rate_s, note='no requests'))
    else:
        bad = rate_c > rule['max'] or rate_c - rate_s > rule['max_increase']
        limit = '<= %g%%, stable + %g%%' % (100 * rule['max'], 100 * rule['max_increase'])
        checks.append(_check('error rate', 'FAIL' if bad else 'ok', rate_c, rate_s, limit))
        if bad:
            failures.append('canary error rate %.2f%% vs stable %.2f%% (limit %.2f%%, '
                            '+%.2f%%)' % (100 * rate_c, 100 * rate_s, 100 * rule['max'],
                                          100 * rule['max_increase']))

    # p99 latency.
    rule = policy['latency_p99']
    p99_c, p99_s = _p99(canary), _p99(stable)
    if p99_c is None or p99_s is None:
        checks.append(_check('p99 latency', 'n/a', p99_c, p99_s, note='no successful calls'))
    else:
        bad = (p99_c > p99_s * rule['max_ratio']
               and p99_c - p99_s > rule['min_increase_seconds'])
        checks.append(_check('p99 latency', 'FAIL' if bad else 'ok', p99_c, p99_s,
                             '<= %gx stable or + %g ms' % (
                                 rule['max_ratio'], 1000 * rule['min_increase_seconds'])))
        if bad:
            failures.append('canary p99 latency %.1f ms vs stable %.1f ms (limit %gx and '
                            '+%g ms)' % (1000 * p99_c, 1000 * p99_s, rule['max_ratio'],
                                         1000 * rule['min_increase_seconds']))

    # Prediction shift (split mode: two arms of one population; in shadow
    # mode the same rows, which the agreement checks below cover better).
    rule = policy['prediction_shift']
    hist_c, hist_s = _prediction(canary), _prediction(stable)
    if hist_c is None or hist_s is None or not hist_c.count or not hist_s.count:
        checks.append(_check('mean prediction', 'n/a', note='no predictions recorded'))
    else:
        shift = abs(hist_c.mean() - hist_s.mean())
        divergence = stats.js_divergence(hist_c.distribution(),
                                                   hist_s.distribution())
        bad = shift > rule['max_mean_shift']
        checks.append(_check('mean prediction', 'FAIL' if bad else 'ok', hist_c.mean(),
                             hist_s.mean(), '|diff| <= %g' % rule['max_mean_shift']))
        if bad:
            failures.append('mean prediction moved by %.3f (%.3f -> %.3f; limit %g)'
                            % (shift, hist_s.mean(), hist_c.mean(), rule['max_mean_shift']))
        bad = divergence > rule['max_js_divergence']
        checks.append(_check('prediction JS divergence', 'FAIL' if bad else 'ok', divergence,
                             None, '<= %g' % rule['max_js_divergence']))
        if bad:
            failures.append('prediction distribution diverged: JS %.3f (limit %g)'
                            % (divergence, rule['max_js_divergence']))

    # Shadow agreement.
    rule = policy['shadow']
    shadow = window.get('shadow') or {}
    compared = shadow.get('comparisons', 0)
    if mode != 'shadow':
        checks.append(_check('shadow agreement', 'n/a', note='split mode'))
    elif compared < rule['min_comparisons']:
        checks.append(_check('shadow agreement', 'wait', compared, None,
                             '>= %d rows' % rule['min_comparisons']))
        holds.append('not enough shadow comparisons yet: %d of %d'
                     % (compared, rule['min_comparisons']))
    else:
        agreement = shadow['agreements'] / compared
        diff = shadow.get('abs_diff_mean')
        bad = agreement < rule['min_agreement']
        checks.append(_check('shadow agreement', 'FAIL' if bad else 'ok', agreement, None,
                             '>= %g%%' % (100 * rule['min_agreement'])))
        if bad:
            failures.append('canary agrees with stable on %.1f%% of rows (limit %.1f%%)'
                            % (100 * agreement, 100 * rule['min_agreement']))
        bad = diff is not None and diff > rule['max_mean_abs_diff']
        checks.append(_check('shadow mean |diff|', 'FAIL' if bad else 'ok', diff, None,
                             '<= %g' % rule['max_mean_abs_diff']))
        if bad:
            failures.append('mean |p_stable - p_canary| is %.3f (limit %g)'
                            % (diff, rule['max_mean_abs_diff']))
    return _finish(decision, policy)


def _finish(decision, policy):
    """Turns checks into the decision: failures win, then holds, then the next step."""
    traffic = decision['traffic']
    if decision['failures'] and not _only_waiting(decision):
        decision['decision'] = ROLLBACK
        decision['target'] = None
    elif decision['hold_reasons'] or decision['failures']:
        decision['decision'] = HOLD
        decision['target'] = traffic
        if decision['failures']:
            decision['hold_reasons'].append('checks fail but the evidence is still thin: '
                                            + '; '.join(decision['failures']))
    elif decision.get('mode') == 'shadow':
        decision['decision'] = HOLD
        decision['target'] = traffic
        decision['hold_reasons'].append('shadow checks pass: the canary has no live traffic '
                                        'in shadow mode; restart the server with --mode split '
                                        'to start the phased rollout at %d%%' % traffic)
    else:
        following = [s for s in policy['steps'] if s > traffic]
        target = following[0] if following else 100
        decision['decision'] = PROMOTE if target >= 100 else SET_TRAFFIC
        decision['target'] = 100 if target >= 100 else target
    decision['steps'] = list(policy['steps'])
    return decision


def _only_waiting(decision):
    """True if failures were measured on fewer requests than the policy requires.

    A canary is never rolled back on a handful of requests, but a
    metrics-for-another-rollout or stale-snapshot hold does not count here:
    those return before any check runs.
    """
    for check in decision['checks']:
        if check['check'] == 'requests':
            return check['result'] == 'wait'
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
    if name == 'shadow agreement':
        return '%.1f%%' % (100 * value)
    return '%.3f' % value


def describe_decision(decision):
    if decision['decision'] == PROMOTE:
        return 'PROMOTE v%d (all checks pass; next step is 100%%)' % decision['canary_version']
    if decision['decision'] == SET_TRAFFIC:
        return 'SET-TRAFFIC %d%% (all checks pass; next of steps %s)' % (
            decision['target'], ' -> '.join(map(str, decision['steps'])))
    if decision['decision'] == ROLLBACK:
        return 'ROLLBACK v%d: %s' % (decision['canary_version'], '; '.join(decision['failures']))
    return 'HOLD at %d%%: %s' % (decision['traffic'], '; '.join(decision['hold_reasons']))


def format_decision(decision):
    lines = ['%s: canary v%d at %d%% vs stable v%d (%s mode, window %.0f s)'
             % (decision['model'], decision['canary_version'], decision['traffic'],
                decision['stable_version'], decision.get('mode', '?'),
                decision.get('window_seconds', 0.0))]
    rows = [('check', 'canary', 'stable', 'limit', 'result')]
    for c in decision['checks']:
        rows.append((c['check'], _fmt(c['check'], c['canary']), _fmt(c['check'], c['stable']),
                     c['limit'] or c['note'], c['result']))
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
    for c in decision['checks']:
        if c['result'] not in ('ok', 'FAIL') or c['check'] == 'requests':
            continue
        if c['stable'] is None:  # a single measure (divergence, agreement)
            parts.append('%s %s' % (c['check'], _fmt(c['check'], c['canary'])))
        else:
            parts.append('%s canary %s stable %s' % (c['check'], _fmt(c['check'], c['canary']),
                                                     _fmt(c['check'], c['stable'])))
    text = '; '.join(parts)
    return '%s (%s)' % (reason, text) if reason else text


def apply(controller, decision, reason=''):
    """Carries out the decision through RolloutController; None for hold."""
    why = reason_text(decision, reason)
    if decision['decision'] == PROMOTE:
        return controller.promote(reason=why)
    if decision['decision'] == SET_TRAFFIC:
        return controller.set_traffic(decision['target'], reason=why)
    if decision['decision'] == ROLLBACK:
        return controller.rollback(reason=why)
    return None


# ---------------------------------------------------------------- CLI glue

def add_arguments(parser):
    parser.add_argument(
        '--metrics', default=None, metavar='URL|FILE',
        help='metrics snapshot: the server URL (e.g. http://127.0.0.1:8501) or a file '
             '(default: <serving-root>/<model>/%s, written by `tfx-canary serve`)'
             % SNAPSHOT_FILE)
    parser.add_argument(
        '--policy', default=None, metavar='FILE',
        help='YAML/JSON policy overriding keys of %s' % os.path.relpath(DEFAULT_POLICY))
    parser.add_argument('--apply', action='store_true',
                        help='carry out the decision (promote, set-traffic or rollback)')
    parser.add_argument('--json', action='store_true', help='print the decision as JSON')


def run(args, controller, print_result):
    """The `rollout analyze` handler body; `print_result` prints an applied change."""
    policy = load_policy(args.policy)
    source = args.metrics or snapshot_path(controller.serving_root, controller.model_name)
    snapshot = load_snapshot(source)
    decision = analyze(controller.load(), snapshot, policy)
    decision['metrics_source'] = source
    result = apply(controller, decision, args.reason) if args.apply else None
    if args.json:
        decision['applied'] = None if result is None else result['event']
        print(json.dumps(decision, indent=2, sort_keys=True))
    else:
        print(format_decision(decision))
        if result is not None:
            print_result(result)
        elif args.apply:
            print('nothing applied (hold)')
    return 0
