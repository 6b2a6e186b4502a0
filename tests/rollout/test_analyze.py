"""`rollout analyze` decisions on crafted metric sets, and --apply (fast, fake models)."""
import json
import random
import time

import pytest

from rollout import analyze
from rollout import control
from rollout import state as state_mod
from rollout.errors import RolloutError
from rollout.metrics_snapshot import SNAPSHOT_FORMAT
from serving.metrics import ShadowStats, VersionStats
from tests.conftest import run_cli_quietly

NOW = 1_800_000_000.0


def _version(requests=1000, errors=0, latency=0.004, mean=0.3, spread=0.2, seed=1):
    rng = random.Random(seed)
    v = VersionStats()
    v.requests = requests
    v.server_errors = errors
    for _ in range(requests - errors):
        v.latency.observe(latency * rng.uniform(0.8, 1.2))
        v.predictions.observe(min(1.0, max(0.0, rng.gauss(mean, spread))))
        v.rows += 1
    return v.to_dict()


def _snapshot(stable=None, canary=None, rollout=(1, 2, 10), mode='split', shadow=None,
              age=5.0, seconds=600.0):
    versions = {}
    if stable is not None:
        versions[str(rollout[0])] = stable
    if canary is not None:
        versions[str(rollout[1])] = canary
    return {'format': SNAPSHOT_FORMAT, 'written_at': NOW - age,
            'models': {'taxi': {'window': {
                'started_at': NOW - seconds, 'seconds': seconds - age, 'mode': mode,
                'rollout': {'stable': rollout[0], 'canary': rollout[1], 'traffic': rollout[2]},
                'versions': versions, 'shadow': shadow or ShadowStats().to_dict()}}}}


def _state(traffic=10, stable=1, canary=2):
    return state_mod.RolloutState('taxi', stable, canary, traffic if canary else 0,
                                  'canary' if canary else 'stable', max(stable, canary or 0))


@pytest.fixture(scope='module')
def policy():
    """The default policy without the sample-ratio check: the crafted snapshots
    give both arms the same requests whatever the percent (SRM has its own tests)."""
    policy = analyze.load_policy()
    policy['sample_ratio']['max_p_value_for_mismatch'] = 0.0
    return policy


def _decide(policy, snapshot, state=None):
    return analyze.analyze(state or _state(), snapshot, policy, now=NOW)


def test_a_healthy_canary_steps_to_the_next_phase_then_promotes(policy):
    healthy = _snapshot(_version(seed=1), _version(seed=2))
    decision = _decide(policy, healthy)
    assert (decision.decision, decision.target) == (analyze.SET_TRAFFIC, 25)
    assert all(c.result in ('ok', 'n/a') for c in decision.checks)
    at_50 = _snapshot(_version(seed=1), _version(seed=2), rollout=(1, 2, 50))
    assert _decide(policy, at_50, _state(50)).decision == analyze.PROMOTE
    text = analyze.format_decision(decision)
    assert 'decision: SET-TRAFFIC 25%' in text and 'error rate' in text


def test_errors_latency_and_prediction_shift_roll_back(policy):
    errors = _decide(policy, _snapshot(_version(), _version(errors=50)))
    assert errors.decision == analyze.ROLLBACK
    assert 'error rate 5.00% vs stable 0.00%' in errors.failures[0]

    slow = _decide(policy, _snapshot(_version(latency=0.004), _version(latency=0.05)))
    assert slow.decision == analyze.ROLLBACK and 'p99 latency' in slow.failures[0]
    # 3x slower but only ~2 ms: below the absolute floor, so not a failure.
    sub_ms = _decide(policy, _snapshot(_version(latency=0.001), _version(latency=0.003)))
    assert sub_ms.decision == analyze.SET_TRAFFIC

    shifted = _decide(policy, _snapshot(_version(mean=0.3), _version(mean=0.7)))
    assert shifted.decision == analyze.ROLLBACK
    assert any('mean prediction moved' in f for f in shifted.failures)


def test_hold_without_enough_evidence_or_fresh_matching_metrics(policy):
    few = _decide(policy, _snapshot(_version(), _version(requests=50)))
    assert few.decision == analyze.HOLD
    assert 'canary 50 of 200' in few.hold_reasons[0]
    # Failing on a handful of requests is a hold, not a rollback.
    thin = _decide(policy, _snapshot(_version(), _version(requests=20, errors=10)))
    assert thin.decision == analyze.HOLD
    assert any('evidence is still thin' in r for r in thin.hold_reasons)

    stale = _decide(policy, _snapshot(_version(), _version(), age=3600))
    assert stale.decision == analyze.HOLD and 'old' in stale.hold_reasons[0]
    young = _decide(policy, _snapshot(_version(), _version(), seconds=20))
    assert young.decision == analyze.HOLD and 'soaking' in young.hold_reasons[0]
    other = _decide(policy, _snapshot(_version(), _version(), rollout=(1, 2, 5)))
    assert other.decision == analyze.HOLD
    assert 'wait for the server to pick up the change' in other.hold_reasons[0]


def test_shadow_mode_uses_agreement(policy):
    def shadow(agree, diff):
        s = ShadowStats()
        s.comparisons, s.agreements = 1000, int(1000 * agree)
        for _ in range(1000):
            s.abs_diff.observe(diff)
        return s.to_dict()

    good = _decide(policy, _snapshot(_version(), _version(), mode='shadow',
                                     shadow=shadow(0.97, 0.02)))
    assert good.decision == analyze.HOLD
    assert '--mode split' in good.hold_reasons[-1]
    bad = _decide(policy, _snapshot(_version(), _version(), mode='shadow',
                                    shadow=shadow(0.6, 0.3)))
    assert bad.decision == analyze.ROLLBACK
    assert any('agrees with stable on 60.0%' in f for f in bad.failures)


def test_no_canary_is_an_error(policy):
    with pytest.raises(RolloutError, match='no live canary'):
        _decide(policy, _snapshot(_version(), None), _state(canary=None))


def test_policy_files_override_key_by_key(tmp_path):
    path = tmp_path / 'policy.yaml'
    path.write_text('steps: [10, 100]\nerror_rate:\n  max: 0.5\n')
    policy = analyze.load_policy(str(path))
    assert policy['steps'] == [10, 100] and policy['error_rate']['max'] == 0.5
    assert policy['error_rate']['max_increase'] == 0.005  # from the default
    as_json = tmp_path / 'policy.json'
    as_json.write_text(json.dumps({'min_requests': {'canary': 5}}))
    assert analyze.load_policy(str(as_json))['min_requests'] == {'canary': 5, 'stable': 200}
    for text, message in [('stepz: [100]', "unknown policy key 'stepz'"),
                          ('steps: [50, 25, 100]', 'increasing whole percents'),
                          ('steps: [5, 50]', 'ending with 100'),
                          ('error_rate:\n  max: 2', 'error_rate.max must be a number'),
                          ('steps: [5, 100', 'not valid YAML')]:
        path.write_text(text)
        with pytest.raises(RolloutError, match=message):
            analyze.load_policy(str(path))


def _staged(tmp_path, traffic):
    """A serving root with fake versions 1 (stable) and 2 (canary at `traffic`)."""
    root = tmp_path / 'serving'
    exports = tmp_path / 'exports'
    controller = control.RolloutController(str(root), 'taxi')
    for version in (1, 2):
        src = exports / str(version)
        (src / 'variables').mkdir(parents=True)
        (src / 'saved_model.pb').write_text('fake %d' % version)
        controller.stage(str(src), canary_percent=traffic)
    return root, controller


@pytest.mark.parametrize('canary_stats, traffic, event, after', [
    (dict(seed=2), 10, 'traffic_changed', (1, 2, 25)),
    (dict(seed=2), 50, 'promoted', (2, None, 0)),
    (dict(errors=100), 10, 'rolled_back', (1, None, 0)),
])
def test_apply_goes_through_the_controller_and_the_cli(tmp_path, canary_stats, traffic, event,
                                                       after):
    root, controller = _staged(tmp_path, traffic)
    # Stable gets the rest of the traffic, so the default policy's sample-ratio check passes.
    stable = _version(requests=1000 * (100 - traffic) // traffic, seed=1)
    snapshot = _snapshot(stable, _version(**canary_stats), rollout=(1, 2, traffic), age=0)
    snapshot['written_at'] = time.time()
    metrics = tmp_path / 'metrics.json'
    metrics.write_text(json.dumps(snapshot))
    code, out = run_cli_quietly(['rollout', 'analyze', '--serving-root', str(root),
                                 '--metrics', str(metrics), '--apply', '--reason', 'nightly'])
    assert code == 0, out
    assert 'decision: ' in out and 'before:' in out
    state = controller.load()
    assert (state.stable_version, state.canary_version, state.canary_traffic_percent) == after
    last = state.last_event
    assert last['event'] == event
    assert last['reason'].startswith('nightly (rollout analyze: ')
    assert 'error rate canary' in last['reason']


def test_cli_hold_changes_nothing_and_bad_input_is_one_error_line(tmp_path, capsys):
    from runners import cli
    root, controller = _staged(tmp_path, 10)
    before = controller.load()
    metrics = tmp_path / 'metrics.json'
    snapshot = _snapshot(_version(), _version(requests=10), age=0)
    snapshot['written_at'] = time.time()
    metrics.write_text(json.dumps(snapshot))
    code, out = run_cli_quietly(['rollout', 'analyze', '--serving-root', str(root),
                                 '--metrics', str(metrics), '--apply', '--json'])
    assert code == 0
    decision = json.loads(out)
    assert decision['decision'] == 'hold' and decision['applied'] is None
    assert controller.load() == before
    code = cli.main(['rollout', 'analyze', '--serving-root', str(root),
                     '--metrics', str(tmp_path / 'missing.json')])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: no metrics snapshot at') and err.count('\n') == 1


# ---------------------------------------------------------------- live quality, sample ratio

def _labeled(n, accuracy, seed):
    """A LiveQuality entry: n labeled rows, `accuracy` of them right at 0.5."""
    from rollout.live_quality import LiveQuality
    rng = random.Random(seed)
    quality = LiveQuality()
    for _ in range(n):
        label = rng.random() < 0.4
        predicted = label if rng.random() < accuracy else not label
        quality.add(rng.uniform(0.5, 0.99) if predicted else rng.uniform(0.01, 0.49),
                    int(label))
    return quality.to_dict()


def _with_quality(stable_quality, canary_quality, traffic=50):
    stable, canary = _version(seed=1), _version(seed=2)
    if stable_quality is not None:
        stable['quality'] = stable_quality
    if canary_quality is not None:
        canary['quality'] = canary_quality
    return _snapshot(stable, canary, rollout=(1, 2, traffic))


def _row(decision, name):
    return next(c for c in decision.checks if c.check == name)


def test_a_worse_canary_on_labeled_traffic_rolls_back_with_its_numbers():
    policy = analyze.load_policy()
    decision = _decide(policy, _with_quality(_labeled(3000, 0.85, 1), _labeled(3000, 0.75, 2)),
                       _state(50))
    assert decision.decision == analyze.ROLLBACK
    failure, = decision.failures
    assert 'canary live accuracy' in failure and 'entirely below the -2% margin' in failure
    row = _row(decision, 'live accuracy')
    assert row.result == 'FAIL' and row.canary < row.stable - 0.05
    assert row.note.startswith('diff -') and '[' in row.note
    auc = _row(decision, 'live AUC')
    assert auc.result == 'info' and 'fixed-horizon' in auc.note
    text = analyze.format_decision(decision)
    assert 'live accuracy' in text and 'always-valid 95%' in text and 'ROLLBACK v2' in text
    assert 'live accuracy canary' in analyze.reason_text(decision)


def test_equal_canaries_pass_or_wait_for_labels_but_never_roll_back():
    policy = analyze.load_policy()
    same = _decide(policy, _with_quality(_labeled(20000, 0.85, 1), _labeled(20000, 0.85, 2)),
                   _state(50))
    assert same.decision == analyze.PROMOTE, same.hold_reasons
    assert _row(same, 'live accuracy').result == 'ok'
    few = _decide(policy, _with_quality(_labeled(1000, 0.85, 1), _labeled(1000, 0.85, 2)),
                  _state(50))
    assert few.decision == analyze.HOLD
    assert any('live accuracy inconclusive, waiting for labels' in r for r in few.hold_reasons)
    thin = _decide(policy, _with_quality(_labeled(1000, 0.85, 1), _labeled(50, 0.85, 2)),
                   _state(50))
    assert thin.decision == analyze.HOLD
    assert any('canary 50 of 200' in r and 'labeled rows' in r for r in thin.hold_reasons)


def test_no_labeled_traffic_does_not_block_unless_required(tmp_path):
    policy = analyze.load_policy()
    decision = _decide(policy, _with_quality(None, None), _state(50))
    assert decision.decision == analyze.PROMOTE
    assert _row(decision, 'live accuracy').note == 'no labeled traffic yet'
    path = tmp_path / 'policy.yaml'
    path.write_text('live_quality: {required: true}\n')
    required = _decide(analyze.load_policy(str(path)), _with_quality(None, None), _state(50))
    assert required.decision == analyze.HOLD
    assert 'no labeled traffic yet' in required.hold_reasons[0]
    damaged = _with_quality(_labeled(300, 0.8, 1), {'labeled': 3})
    assert _decide(policy, damaged, _state(50)).decision == analyze.HOLD


def test_a_broken_split_holds_and_says_so():
    policy = analyze.load_policy()
    # 10% configured, 14% observed over 2,000 requests.
    broken = _decide(policy, _snapshot(_version(requests=1720), _version(requests=280)))
    assert broken.decision == analyze.HOLD
    reason, = broken.hold_reasons
    assert reason.startswith('sample ratio mismatch: the split is broken')
    assert 'canary got 14.00% of 2000 requests, expected 10%' in reason and 'chi2 35.6' in reason
    assert _row(broken, 'sample ratio').result == 'HOLD'
    fine = _decide(policy, _snapshot(_version(requests=1790), _version(requests=210)))
    assert fine.decision == analyze.SET_TRAFFIC
    assert _row(fine, 'sample ratio').result == 'ok'
    # Shadow mode sends every request to both: no ratio to test.
    shadow = _decide(policy, _snapshot(_version(), _version(), mode='shadow'))
    assert _row(shadow, 'sample ratio').result == 'n/a'


@pytest.mark.parametrize('text, message', [
    ('sample_ratio: {max_p_value_for_mismatch: 2}',
     'sample_ratio.max_p_value_for_mismatch must be a number from 0 to 1'),
    ('live_quality: {min_labeled: -1}', 'live_quality.min_labeled must be a number >= 0'),
    ('live_quality: {accuracy_margin: 0.5x}', 'live_quality.accuracy_margin must be a number'),
    ('live_quality: {alpha: 0}', 'live_quality.alpha must be strictly between 0 and 1'),
    ('live_quality: {required: "yes"}', 'live_quality.required must be true or false'),
    ('live_quality: {margin: 0.1}', "unknown policy key 'margin' in live_quality"),
    ('live_quality: 3', "policy key 'live_quality' must be a mapping"),
])
def test_bad_live_quality_and_sample_ratio_policies_are_clear_errors(tmp_path, text, message):
    path = tmp_path / 'policy.yaml'
    path.write_text(text + '\n')
    with pytest.raises(RolloutError, match=message) as error:
        analyze.load_policy(str(path))
    assert str(path) in str(error.value)
