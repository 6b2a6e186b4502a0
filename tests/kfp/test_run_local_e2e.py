"""The compiled package, end to end under kfp.local (`tfx-canary kfp run-local`):
every step runs KFP's calling convention (executor input, TFX's KFP v2
container entrypoint) as a process of this environment (minutes; marked e2e).

Story: compile for KFP and Vertex -> run-local span 1 (new data lands: span 2)
-> run-local span 2 against the stable staged on the shared serving folder ->
stable v1 + canary v2, decided exactly as LocalDagRunner decides on the same
data -> the Vertex job, re-run with nothing changed, stages nothing new.

Settings: the defaults both runners share (train/eval steps, thresholds) and
`--beam-cpu 1`, which gives the package the Beam args LocalDagRunner picks for
this input (in-memory DirectRunner, one worker): seeded training then gives
the same numbers, so the comparison can be exact. The LocalDagRunner side is
the session's shared `pipeline_workspace` (tests/conftest.py).
"""
import glob
import json
import os
import re

import pytest

from runners.kfp_local import runner
from tests.conftest import DATA_ROOT, run_cli_quietly

pytestmark = pytest.mark.e2e
MODEL = 'taxi'
PACKAGE_SETTINGS = ['--image', 'local/tfx-canary:e2e', '--pipeline-root', 'gs://unused/root',
                    '--gpu-count', '0', '--beam-cpu', '1']
PROGRESS_RE = re.compile(r'^\s+\[(\d+)/(\d+)\] (\S+)\s+([\d.]+) s$')
SUMMARY_LINES = ('span used', 'metrics (eval)', 'blessed')
EXECUTOR_ENTRYPOINT = 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'



def _data_root(tmp, spans):
    """A data root holding only `spans`: what the bucket holds on that day."""
    root = tmp / ('data-%s' % '-'.join(map(str, spans)))
    root.mkdir()
    for span in spans:
        os.symlink(os.path.join(DATA_ROOT, 'span-%d' % span), root / ('span-%d' % span))
    return str(root)


def _run_local(package, workspace, data_root):
    code, out = run_cli_quietly(['kfp', 'run-local', '--package', package,
                                 '--workspace', str(workspace), '--param',
                                 'data_root=%s' % data_root])
    assert code == 0, out
    return out


def _rollout(workspace):
    with open(workspace / 'serving' / MODEL / 'rollout.json') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def packages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('packages')
    kfp, vertex = str(tmp / 'p.yaml'), str(tmp / 'p.json')
    assert run_cli_quietly(['kfp', 'compile', '--target', 'kfp', '--serving-pvc', 'serving',
                            '--output', kfp] + PACKAGE_SETTINGS)[0] == 0
    assert run_cli_quietly(['kfp', 'compile', '--target', 'vertex', '--serving-root',
                            '/gcs/unused/serving', '--output', vertex] + PACKAGE_SETTINGS)[0] == 0
    return {'kfp': kfp, 'vertex': vertex}


@pytest.fixture(scope='module')
def runs(packages, tmp_path_factory):
    """Span 1, then span 2, then the Vertex job with nothing changed, in one workspace."""
    tmp = tmp_path_factory.mktemp('run-local')
    workspace = tmp / 'workspace'
    data = {1: _data_root(tmp, [1]), 2: _data_root(tmp, [1, 2])}
    result = {'workspace': workspace, 'outputs': [], 'states': []}
    for package, spans in ((packages['kfp'], 1), (packages['kfp'], 2), (packages['vertex'], 2)):
        result['outputs'].append(_run_local(package, workspace, data[spans]))
        result['states'].append(_rollout(workspace))
    # kfp.local names each run's folder <pipeline>-<timestamp>: sorted = in order.
    result['run_dirs'] = sorted(glob.glob(str(workspace / 'kfp-local' / 'tfx-canary-taxi-*')))
    return result


def _executor_output(run_dir, task, key):
    with open(os.path.join(run_dir, task, runner.EXECUTOR_OUTPUT)) as f:
        (artifact,) = json.load(f)['artifacts'][key]['artifacts']
    return artifact


def _commands(run_dir, task):
    """The modules a task's processes ran (`python -m MODULE`), from its log."""
    with open(os.path.join(run_dir, task, runner.TASK_LOG)) as f:
        return [line.split()[3] for line in f if line.startswith('$ ')]


def _summary(out):
    """{label: value} of the 'Summary' block both runners print."""
    block = out[out.rindex('Summary\n'):]
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(':') for line in block.splitlines()[1:]) if v}


def test_span_1_runs_every_task_in_dag_order_and_stages_stable_v1(runs, packages):
    import yaml
    with open(packages['kfp']) as f:
        tasks = next(yaml.safe_load_all(f))['root']['dag']['tasks']
    progress = [PROGRESS_RE.match(line) for line in runs['outputs'][0].splitlines()]
    order = [m.group(3) for m in progress if m]
    assert sorted(order) == sorted(tasks)
    for name, task in tasks.items():
        assert all(order.index(d) < order.index(name) for d in task.get('dependentTasks', []))
    assert _summary(runs['outputs'][0])['blessed'] == 'yes'
    state = runs['states'][0]
    assert (state['stable_version'], state['canary_version']) == (1, None)
    assert os.path.isfile(runs['workspace'] / 'serving' / MODEL / '1' / 'saved_model.pb')
    for name in tasks:   # Every task left its log where the failure message would point.
        assert os.path.isfile(os.path.join(runs['run_dirs'][0], name, runner.TASK_LOG))
    # Open-source KFP ignores lifecycle hooks: ExampleGen ran its executor only,
    # which resolved the latest span itself (components/span_example_gen).
    assert _commands(runs['run_dirs'][0], 'CsvExampleGen') == [EXECUTOR_ENTRYPOINT]
    assert _summary(runs['outputs'][0])['span used'] == '1'


def test_span_2_is_judged_against_stable_v1_and_staged_as_canary(runs):
    second = runs['run_dirs'][1]
    baseline = _executor_output(second, 'BaselineModel', 'model')['metadata']
    assert (baseline['has_baseline'], baseline['baseline_version']) == (1, 1)
    blessing = _executor_output(second, 'Evaluator', 'blessing')['metadata']
    assert blessing['baseline_version'] == 1 and blessing['blessed'] == 1
    summary = _summary(runs['outputs'][1])
    assert summary['span used'] == '2' and '(stable v1, ' in summary['baseline']
    state = runs['states'][1]
    assert (state['stable_version'], state['canary_version']) == (1, 2)
    assert summary['pushed to'] == str(runs['workspace'] / 'serving' / MODEL / '2')


def test_decisions_and_metrics_equal_local_dag_runner_on_the_same_data(runs, pipeline_workspace):
    for local, (code, dag_out) in zip(runs['outputs'][:2], pipeline_workspace['runs']):
        assert code == 0, dag_out
        ours, theirs = _summary(local), _summary(dag_out)
        assert {k: ours[k] for k in SUMMARY_LINES} == {k: theirs[k] for k in SUMMARY_LINES}
        # The baseline's metrics (the path after them differs: another workspace).
        assert ours['baseline'].split(' (')[0] == theirs['baseline'].split(' (')[0]


def test_the_vertex_job_runs_under_the_same_local_execution(runs):
    """The third run: the Vertex PipelineJob of the same pipeline, on span 2 again."""
    out = runs['outputs'][2]
    assert 'vertex package' in out and 'caching        : none' in out
    assert len([line for line in out.splitlines() if PROGRESS_RE.match(line)]) == len(
        [line for line in runs['outputs'][1].splitlines() if PROGRESS_RE.match(line)])
    # Vertex runs ExampleGen's driver (the preCacheCheck hook) before the
    # executor and hands it the span the driver resolved.
    assert _commands(runs['run_dirs'][2], 'CsvExampleGen') == [
        'tfx.orchestration.kubeflow.v2.file_based_example_gen.driver', EXECUTOR_ENTRYPOINT]
    baseline = _executor_output(runs['run_dirs'][2], 'BaselineModel', 'model')['metadata']
    assert baseline['baseline_version'] == 1   # Stable is still v1: v2 is the canary.
    # Stock ExampleGen + driver (Vertex) and span_example_gen (KFP): the same data,
    # the same seeded model, the same verdict.
    vertex, kfp = _summary(out), _summary(runs['outputs'][1])
    assert {k: vertex[k] for k in SUMMARY_LINES + ('baseline',)} == {
        k: kfp[k] for k in SUMMARY_LINES + ('baseline',)}


def test_a_rerun_with_nothing_changed_stages_nothing_new(runs):
    """What a KFP cache hit would give: nothing new staged, rollout.json as it was."""
    assert _summary(runs['outputs'][2])['pushed to'] == str(
        runs['workspace'] / 'serving' / MODEL / '2')
    assert runs['states'][2] == runs['states'][1]
    assert not os.path.exists(runs['workspace'] / 'serving' / MODEL / '3')
