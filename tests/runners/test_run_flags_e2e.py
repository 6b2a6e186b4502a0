"""`tfx-canary run` flags through the real pipeline, and the call `make run` makes.

Pipeline runs are the cost here (tens of seconds each), so each fixture is
shared by the tests of this module:
  make_run      `tfx-canary run --span 1 --span 2`: one invocation, started as
                `make run` starts it (the installed command, in a folder whose
                ./workspace is the test's). It is the session's shared
                `pipeline_workspace` (tests/conftest.py), not a run of its own.
  serving_flags a copy of that workspace, then one gentle retrain on span 2 with
                --tf-serving-root, --kserve-storage-uri-prefix, --canary-percent
                (these only change what CanaryPusher writes; the retrain is
                blessed, so it is staged as the new canary).
  anomaly_runs  a fresh workspace and a span with a value outside the schema's
                domain, at the smallest training config (the verdict does not
                matter): without --allow-anomaly (stops early), then with it
                and --no-cache (one full run checks both flags).
"""
import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from rollout import kserve
from runners import cli
from tests.conftest import DATA_ROOT, readonly_store, tfx_canary_command
from tests.lineage.conftest import RETRY_ARGS

pytestmark = pytest.mark.e2e
MODEL = 'taxi'
SERVING_FLAGS = ['--tf-serving-root', '/models', '--kserve-storage-uri-prefix',
                 'gs://bucket/serving', '--canary-percent', '25']
SMALLEST_TRAINING = ['--train-steps', '1', '--eval-steps', '1']
PROGRESS = re.compile(r'^  \[(\d+)/(\d+)\] (\S+)\s+(cached|[0-9.]+ s)$')


def in_process(*argv):
    """`tfx-canary ARGV` in this process (TensorFlow is loaded once): (code, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def progress(out):
    """[(component, 'cached' or 'N.N s')] of every `[i/N] Component` line, in order."""
    return [(m.group(3), m.group(4)) for m in map(PROGRESS.match, out.splitlines()) if m]


def summaries(out):
    """[{'span used': '1', 'blessed': 'yes', ...}] of every printed Summary block."""
    result = []
    for block in out.split('\nSummary\n')[1:]:
        fields = {}
        for line in block.splitlines():
            if not line.startswith('  ') or ' : ' not in line:
                break
            key, _, value = line.partition(' : ')
            fields[key.strip()] = value.strip()
        result.append(fields)
    return result


def rollout_state(ws):
    with open(os.path.join(ws, 'serving', MODEL, 'rollout.json')) as f:
        return json.load(f)


# ------------------------------------------------------------------ make run

@pytest.fixture(scope='module')
def make_run(pipeline_workspace):
    """`make run` in a fresh folder: `tfx-canary run --span 1 --span 2` (the
    session's shared run, tests/conftest.py), then `tfx-canary rollout status`,
    both with the default ./workspace."""
    status = subprocess.run(tfx_canary_command() + ['rollout', 'status'],
                            cwd=pipeline_workspace['cwd'], capture_output=True, text=True,
                            timeout=300)
    return {'workspace': str(pipeline_workspace['path']), 'run': pipeline_workspace['process'],
            'status': status}


def test_make_run_trains_both_spans_in_one_invocation(make_run):
    run, ws = make_run['run'], make_run['workspace']
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'error:' not in run.stderr
    starts = [l for l in run.stdout.splitlines() if l.startswith('Running ')]
    assert starts == ['Running tfx-canary-taxi on span %d (span-%d/data.csv) -> workspace %s'
                      % (span, span, ws) for span in (1, 2)]
    counters = [m.group(1, 2) for m in map(PROGRESS.match, run.stdout.splitlines()) if m]
    # Keras' own progress line ("200/200 - 4s - loss: ...") stays in the Trainer's log.
    assert not [l for l in run.stdout.splitlines() if re.match(r'^\d+/\d+ - ', l)]
    total = counters[0][1]
    # Every component reported once per span: [1/N] .. [N/N], twice.
    assert counters == [(str(i), total) for i in range(1, int(total) + 1)] * 2
    first, second = summaries(run.stdout)
    assert (first['span used'], second['span used']) == ('1', '2')
    assert first['blessed'] == 'yes' and first['pushed to'] == os.path.join(ws, 'serving', MODEL, '1')
    assert '(stable v1, ' in second['baseline']     # span 2 is judged against span 1's model
    pushed = second['pushed to'] == os.path.join(ws, 'serving', MODEL, '2')
    assert pushed == (second['blessed'] == 'yes'), second   # Nothing else moved stable.
    outcome = 'blessed+pushed' if pushed else 'not pushed'
    assert run.stdout.rstrip().splitlines()[-1] == (
        'All runs: span 1 blessed+pushed; span 2 %s' % outcome)


def test_make_runs_rollout_status_shows_what_the_runs_staged(make_run):
    status, ws = make_run['status'], make_run['workspace']
    assert status.returncode == 0, status.stdout + status.stderr
    state = rollout_state(ws)
    assert state['stable_version'] == 1
    lines = status.stdout.splitlines()
    assert lines[0] == 'model       taxi (phase: %s)' % state['phase']
    stable_share = 100 - (state['canary_traffic_percent'] if state['canary_version'] else 0)
    assert lines[1] == 'stable      v1  %d%% of traffic' % stable_share
    assert lines[-1] == 'serving state: %s' % os.path.join(ws, 'serving', MODEL, 'rollout.json')


# ------------------------------------------------------------------ serving flags

@pytest.fixture(scope='module')
def serving_flags(make_run, tmp_path_factory):
    """A copy of the make-run workspace after `run --span 2 <gentle retrain> SERVING_FLAGS`."""
    assert make_run['run'].returncode == 0, make_run['run'].stdout + make_run['run'].stderr
    ws = str(tmp_path_factory.mktemp('serving-flags') / 'workspace')
    shutil.copytree(make_run['workspace'], ws, symlinks=True)
    code, out, err = in_process('run', '--workspace', ws, '--data-root', DATA_ROOT,
                                *RETRY_ARGS, *SERVING_FLAGS)
    assert code == 0, out + err
    [result] = summaries(out)
    assert result['blessed'] == 'yes', 'the gentle retrain was not blessed:\n' + out
    return {'workspace': ws, 'version': int(os.path.basename(result['pushed to']))}


def test_tf_serving_root_is_the_base_path_in_models_config(serving_flags):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    ws = serving_flags['workspace']
    # Written in the serving root, naming it as TF Serving's container sees it.
    with open(os.path.join(ws, 'serving', 'models.config')) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    [entry] = config.model_config_list.config
    assert (entry.name, entry.base_path) == (MODEL, '/models/taxi')
    assert dict(entry.version_labels) == {'stable': 1, 'canary': serving_flags['version']}
    assert not os.path.exists('/models/taxi/%d' % serving_flags['version'])


def test_kserve_storage_uri_prefix_is_in_the_inference_service(serving_flags):
    ws = serving_flags['workspace']
    with open(kserve.manifest_path(os.path.join(ws, 'serving'), MODEL)) as f:
        manifest = yaml.safe_load(f)
    predictor = manifest['spec']['predictor']
    # The canary is what KServe rolls out; stable is remembered in an annotation.
    assert predictor['model']['storageUri'] == 'gs://bucket/serving/taxi/%d' % serving_flags['version']
    assert manifest['metadata']['annotations']['tfx-canary/stable-storage-uri'] == \
        'gs://bucket/serving/taxi/1'


def test_canary_percent_is_the_new_canarys_traffic(serving_flags):
    ws = serving_flags['workspace']
    state = rollout_state(ws)
    assert (state['stable_version'], state['canary_version'], state['canary_traffic_percent']) \
        == (1, serving_flags['version'], 25)
    assert state['history'][-1]['event'] == 'staged_canary'
    with open(kserve.manifest_path(os.path.join(ws, 'serving'), MODEL)) as f:
        assert yaml.safe_load(f)['spec']['predictor']['canaryTrafficPercent'] == 25
    code, out, err = in_process('rollout', 'status', '--workspace', ws)
    assert code == 0, err
    assert out.splitlines()[1:3] == ['stable      v1  75% of traffic',
                                     'canary      v%d  25%% of traffic' % serving_flags['version']]


# ------------------------------------------------------------------ anomaly and cache

def _span_with_unknown_payment_type(root):
    """span-1: 400 rows of the bundled span 1, 50 of them paid in 'Bitcoin'
    (not in the schema's payment_type domain: an ERROR anomaly)."""
    with open(os.path.join(DATA_ROOT, 'span-1', 'data.csv')) as f:
        rows = list(csv.DictReader(f))[:400]
    for row in rows[:50]:
        row['payment_type'] = 'Bitcoin'
    os.makedirs(os.path.join(root, 'span-1'))
    with open(os.path.join(root, 'span-1', 'data.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope='module')
def anomaly_runs(tmp_path_factory):
    """The span without --allow-anomaly (stops at the gate), then with it and
    --no-cache: its data steps have the same inputs as in the blocked run, so
    only --no-cache makes them execute again."""
    base = tmp_path_factory.mktemp('anomaly')
    data = _span_with_unknown_payment_type(str(base / 'data'))
    ws = str(base / 'workspace')
    args = ['run', '--workspace', ws, '--data-root', data, '--span', '1', *SMALLEST_TRAINING]
    runs = {'blocked': in_process(*args),
            'allowed': in_process(*args, '--allow-anomaly', 'payment_type', '--no-cache')}
    contexts = sorted(readonly_store(ws).get_contexts_by_type('pipeline_run'), key=lambda c: c.id)
    return {'workspace': ws, 'runs': runs, 'contexts': dict(zip(('blocked', 'allowed'), contexts))}


def _executions(anomaly_runs, run):
    """{node id: Execution} of one of the runs (its pipeline_run context)."""
    store = readonly_store(anomaly_runs['workspace'])
    in_run = {e.id for e in store.get_executions_by_context(anomaly_runs['contexts'][run].id)}
    return {node.name.split('.', 1)[1]: e
            for node in store.get_contexts_by_type('node')
            for e in store.get_executions_by_context(node.id) if e.id in in_run}


def _outputs(anomaly_runs, execution):
    """Ids of the artifacts an execution output."""
    from ml_metadata.proto import metadata_store_pb2
    events = readonly_store(anomaly_runs['workspace']).get_events_by_execution_ids([execution.id])
    ids = {e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT}
    assert ids, execution
    return ids


DATA_STEPS = ('CsvExampleGen', 'ImportSchemaGen', 'StatisticsGen', 'ExampleValidator')


def test_a_known_anomaly_stops_the_run_at_the_validation_gate(anomaly_runs):
    code, out, err = anomaly_runs['runs']['blocked']
    assert code == 2, out + err
    [line] = err.strip().splitlines()
    assert line.startswith('error: blocking data anomalies') and "feature 'payment_type'" in line
    assert 'Summary' not in out
    executions = _executions(anomaly_runs, 'blocked')
    assert set(DATA_STEPS) <= set(executions) and 'Trainer' not in executions
    assert not os.path.exists(os.path.join(anomaly_runs['workspace'], 'serving', MODEL, '1'))


def test_allow_anomaly_lets_that_span_through_the_gate(anomaly_runs):
    code, out, err = anomaly_runs['runs']['allowed']
    assert code == 0, out + err
    [result] = summaries(out)
    assert result['span used'] == '1' and result['metrics (eval)'].startswith('auc ')
    executions = _executions(anomaly_runs, 'allowed')
    gate = executions['ValidationGate']
    assert gate.custom_properties['allowed_anomalies'].string_value == 'payment_type'
    assert {'Trainer', 'Evaluator', 'CanaryPusher'} <= set(executions)


def test_no_cache_re_executes_every_component(anomaly_runs):
    from ml_metadata.proto import metadata_store_pb2
    code, out, err = anomaly_runs['runs']['allowed']
    assert code == 0, out + err
    lines = progress(out)
    assert lines and all(took != 'cached' for _, took in lines), lines
    executions = _executions(anomaly_runs, 'allowed')
    assert set(executions) == {node for node, _ in lines}
    assert {e.last_known_state for e in executions.values()} == {
        metadata_store_pb2.Execution.COMPLETE}
    # The data steps ran again on the same inputs: new outputs (a cache hit
    # would hand over the blocked run's artifacts).
    blocked = _executions(anomaly_runs, 'blocked')
    for node in DATA_STEPS:
        assert not _outputs(anomaly_runs, executions[node]) & _outputs(anomaly_runs, blocked[node])
