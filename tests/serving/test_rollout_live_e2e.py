"""Live rollout against a running server: promote, rollback and a new stage under load,
`rollout analyze --apply`, and capture of production requests validated by TFDV.
"""
import json
import os
import threading
import time

import httpx
import numpy as np
import pytest

from rollout import audit, control
from serving import capture, client
from tests.conftest import run_cli_quietly
from tests.serving.conftest import MODEL, predict_body, running, wait_for

pytestmark = pytest.mark.e2e


def _applied(server, stable, canary, traffic=None):
    plan = server.server.registry.models[MODEL].plan
    return (plan.stable, plan.canary) == (stable, canary) and (
        traffic is None or plan.traffic == traffic)


def test_promote_rollback_and_stage_under_load_fail_no_request(served_workspace, instances):
    serving_root = served_workspace / 'serving'
    controller = control.RolloutController(str(serving_root), MODEL)
    stop = threading.Event()
    results, errors = [], []

    def load(worker):
        # Bounded in count and time; stops as soon as the test is done.
        deadline = time.monotonic() + 90
        with httpx.Client(timeout=30) as c:
            for i in range(20000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                body = predict_body([instances[(worker * 7919 + i) % len(instances)]])
                try:
                    r = c.post(url, json=body, headers={'X-Request-Key': 'u%d-%d' % (worker, i)})
                    results.append((time.monotonic(), r.status_code,
                                    r.headers.get('x-model-version')))
                except httpx.HTTPError as e:
                    errors.append(repr(e))

    with running(serving_root) as server:
        url = server.url + '/v1/models/taxi:predict'
        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        marks, started = {}, []
        try:
            wait_for(lambda: len(results) > 100, what='load to start')
            steps = [
                ('traffic 50', lambda: controller.set_traffic(50), (1, 2, 50)),
                ('promote', controller.promote, (2, None, 0)),
                # A new version (a copy of v1's SavedModel) is loaded while v2 serves.
                ('stage v3', lambda: controller.stage(str(serving_root / MODEL / '1'),
                                                      canary_percent=50), (2, 3, 50)),
                ('rollback', controller.rollback, (2, None, 0)),
                ('rollback --to 1', lambda: controller.rollback(to_version=1), (1, None, 0)),
            ]
            for name, step, (stable, canary, traffic) in steps:
                started.append(time.monotonic())
                step()
                wait_for(lambda: _applied(server, stable, canary, traffic), timeout=60,
                         what='the server to apply ' + name)
                marks[name] = time.monotonic()
                count = len(results)
                wait_for(lambda: len(results) > count + 40, what='traffic after ' + name)
        finally:
            stop.set()
            for t in threads:
                t.join()
        states = server.server.registry.models[MODEL].version_states()

    assert not errors
    statuses = [status for _, status, _ in results]
    assert statuses.count(200) == len(results), {s: statuses.count(s) for s in set(statuses)}
    assert len(results) > 300
    seen = {version for _, _, version in results}
    assert seen == {'1', '2', '3'}
    # Between a switch (plus the time a request already in flight takes) and
    # the next step, only the versions of the new plan answer.
    grace = 2.0
    names = [name for name, _, _ in steps]
    ends = started[1:] + [float('inf')]
    expect = {'promote': {'2'}, 'rollback': {'2'}, 'rollback --to 1': {'1'}}
    for name, end in zip(names, ends):
        if name in expect:
            between = {v for t, _, v in results if marks[name] + grace < t < end}
            assert between <= expect[name], (name, between)
    # Versions that left the plan were unloaded once their requests finished.
    assert states[1] == 'AVAILABLE' and states[2] == 'END' and states[3] == 'END'


def test_analyze_apply_promotes_a_healthy_canary_and_audits_it(
        served_workspace, instances, tmp_path):
    serving_root = served_workspace / 'serving'
    metadata = served_workspace / 'metadata.sqlite'
    controller = control.RolloutController(str(serving_root), MODEL)
    controller.set_traffic(50)
    policy = tmp_path / 'policy.yaml'
    # Only the apply path is under test here (decisions: test_analyze.py), so
    # the limits that depend on this machine's load and on how much this
    # run's retrain differs from v1 are opened wide.
    policy.write_text('min_requests: {canary: 150, stable: 150}\nmin_window_seconds: 0\n'
                      'latency_p99: {max_ratio: 100}\n'
                      'prediction_shift: {max_mean_shift: 1, max_js_divergence: 1}\n')
    with running(serving_root) as server:
        bodies = [predict_body([instances[i % len(instances)]], request_key='r%d' % i)
                  for i in range(600)]
        result = client.drive(server.url + '/v1/models/taxi:predict', bodies, concurrency=4)
        assert [r[0] for r in result['results']].count(200) == 600
        base = ['rollout', 'analyze', '--serving-root', str(serving_root),
                '--metadata-path', str(metadata), '--metrics', server.url,
                '--policy', str(policy)]
        code, out = run_cli_quietly(base + ['--json'])
        decision = json.loads(out)
        assert code == 0 and decision['decision'] == 'promote', out
        checks = {c['check']: c for c in decision['checks']}
        assert checks['error rate']['canary'] == 0 and checks['p99 latency']['result'] == 'ok'
        code, out = run_cli_quietly(base + ['--apply', '--reason', 'canary review'])
        assert code == 0 and 'decision: PROMOTE v2' in out and 'taxi: promoted v2' in out
        wait_for(lambda: _applied(server, 2, None), what='the server to serve v2 only')
        # The server started a fresh metrics window for the new rollout.
        snapshot = server.server.metrics.snapshot()['models']['taxi']['window']
        assert snapshot['rollout']['stable'] == 2 and snapshot['versions'] == {}
    state = controller.load()
    assert (state.stable_version, state.canary_version) == (2, None)
    store = audit.connect(audit.sqlite_connection_config(str(metadata), create=False))
    last = audit.transitions(store, MODEL)[-1]
    assert last['event'] == 'promoted' and last['execution_id']
    assert last['reason'].startswith('canary review (rollout analyze: PROMOTE v2')
    assert 'p99 latency canary' in last['reason']


def _capture_run(serving_root, capture_root, span, batches, rate=1.0):
    """Serves `batches` with capture on; returns the responses' predictions."""
    sink = capture.CsvFileSink(str(capture_root), span,
                               capture.header_from_schema(
                                   os.path.join(os.path.dirname(__file__), '..', '..', 'data',
                                                'taxi', 'schema.pbtxt')))
    writer = capture.CaptureWriter(sink, rate, timestamp_column='trip_start_timestamp')
    answers = []
    with running(serving_root, capture=writer) as server:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for batch in batches:
                r = c.post('/v1/models/taxi:predict', json=predict_body(batch))
                assert r.status_code == 200, r.text
                answers.append((r.headers['x-model-version'], r.json()['predictions']))
    return answers, writer


def test_capture_is_a_span_that_tfdv_validates(served_workspace, instances):
    serving_root = served_workspace / 'serving'
    capture_root = served_workspace / 'capture'
    rows = instances
    batches = [rows[i:i + 50] for i in range(0, len(rows), 50)]
    answers, writer = _capture_run(serving_root, capture_root, 3, batches)
    assert writer.rows_written == len(rows) and writer.dropped == 0

    parts = capture.part_files(str(capture_root), 3)
    captured = capture.read_parts(parts)
    assert len(captured) == len(rows)
    # Served values round-trip (float32, as the model saw them); no label.
    first = captured[0]
    assert first['company'] == rows[0]['company'] and first['tips'] == ''
    assert float(first['fare']) == pytest.approx(rows[0]['fare'], rel=1e-6)
    assert int(first['trip_start_timestamp']) > 1.7e9
    meta = [m for p in parts for m in capture.read_meta(p)]
    predicted = [p[0] for _, batch in answers for p in batch]
    assert np.allclose([m['prediction'] for m in meta], predicted, atol=1e-6)
    assert {m['version'] for m in meta} <= {1, 2}

    code, out = run_cli_quietly(['capture', 'validate', '--capture-dir', str(capture_root),
                                 '--workspace', str(served_workspace)])
    assert code == 0, out
    assert 'schema anomalies (SERVING environment): none' in out
    assert 'Split-train' in out

    # The next span: a promotion gone wrong upstream - every rider now pays
    # cash and fares are in cents. Captured through the server, flagged by TFDV.
    skewed = [dict(r, payment_type='Cash', fare=r['fare'] * 100) for r in rows[:1500]]
    _capture_run(serving_root, capture_root, 4, [skewed[i:i + 50]
                                                 for i in range(0, len(skewed), 50)])
    code, out = run_cli_quietly(['capture', 'validate', '--capture-dir', str(capture_root),
                                 '--workspace', str(served_workspace), '--json'])
    report = json.loads(out)
    assert code == 1 and report['span'] == 4 and not report['ok']
    skew = {r['feature']: r for r in report['skew']}
    assert skew['payment_type']['anomaly'] and skew['fare']['anomaly']
    assert report['drift_baseline'] == 'capture span 3'
