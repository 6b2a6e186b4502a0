"""Two `tfx-canary run`s in one workspace at once, and `kill -9` mid-Trainer.

Real processes (the installed CLI) on one workspace: what a scheduled retrain
overlapping a manual one, or a machine dying mid-run, does to a user.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from rollout import control
from runners.cli import EXIT_STALE_BASELINE
from tests.conftest import DATA_ROOT, PROJECT_ROOT, readonly_store as _store

pytestmark = pytest.mark.e2e
MODEL = 'taxi'


def _cli(ws, *args):
    """argv of `tfx-canary run --workspace WS ...` as a new user runs it."""
    return [sys.executable, '-m', 'runners.cli', 'run', '--workspace', str(ws),
            '--data-root', DATA_ROOT, *args]


def _start(argv):
    # Own process group: kill -9 reaches every process the run started.
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=PROJECT_ROOT)


def _baselines_seen(ws):
    """has_baseline of every blessing: what each run's Evaluator judged against."""
    return sorted(a.custom_properties['has_baseline'].int_value
                  for a in _store(ws).get_artifacts_by_type('ModelBlessing'))


def test_overlapping_runs_never_push_against_a_stale_baseline(tmp_path):
    ws = tmp_path / 'workspace'
    runs = {span: _start(_cli(ws, '--span', str(span))) for span in (1, 2)}
    results = {span: p.communicate(timeout=900) + (p.returncode,) for span, p in runs.items()}

    # The race happened: both runs were judged against "nothing serves yet".
    assert _baselines_seen(ws) == [0, 0], results
    codes = sorted(code for _, _, code in results.values())
    assert codes == [0, EXIT_STALE_BASELINE], results
    for span, (out, err, code) in results.items():
        # Each run reports its own span, not the other run's.
        assert 'span used      : %d\n' % span in out, out
        if code == EXIT_STALE_BASELINE:
            refused = span
            assert 'NOT PUSHED: not pushed: the model was evaluated against no baseline, ' \
                   'but taxi now serves stable v1' in out, out
            [line] = [l for l in err.splitlines() if l.startswith('error: ')]
            assert 're-run the pipeline' in line
    state = control.RolloutController(str(ws / 'serving'), MODEL).load()
    assert (state.stable_version, state.canary_version, state.last_version) == (1, None, 1)
    stale = [a for a in _store(ws).get_artifacts_by_type('PushedModel')
             if a.custom_properties['stale_baseline'].int_value == 1]
    assert len(stale) == 1

    # The advice works: re-running the refused span judges it against stable v1.
    rerun = subprocess.run(_cli(ws, '--span', str(refused)), capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert 'baseline       : ' in rerun.stdout and '(stable v1, ' in rerun.stdout, rerun.stdout
    state = control.RolloutController(str(ws / 'serving'), MODEL).load()
    if 'blessed        : yes' in rerun.stdout:   # the verdict itself is data/machine-dependent
        assert (state.stable_version, state.canary_version) == (1, 2)
    else:
        assert (state.stable_version, state.canary_version) == (1, None)


def _running_trainer(ws):
    from ml_metadata.proto import metadata_store_pb2
    try:
        store = _store(ws)
        executions = store.get_executions_by_type('tfx.components.trainer.component.Trainer')
    except Exception:  # the store does not exist yet
        return False
    return any(e.last_known_state == metadata_store_pb2.Execution.RUNNING for e in executions)


def test_kill_9_during_trainer_then_rerun_stages_a_loadable_model(tmp_path):
    ws = tmp_path / 'workspace'
    run = _start(_cli(ws, '--span', '1'))
    deadline = time.time() + 600
    while not _running_trainer(ws):
        assert run.poll() is None, run.communicate()
        assert time.time() < deadline, 'the Trainer never started'
        time.sleep(0.2)
    time.sleep(1.0)  # inside model.fit
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    assert not os.path.exists(ws / 'serving' / MODEL / 'rollout.json')

    rerun = subprocess.run(_cli(ws, '--span', '1'), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert 'blessed        : yes' in rerun.stdout, rerun.stdout
    controller = control.RolloutController(str(ws / 'serving'), MODEL)
    status = controller.status()
    assert (status.stable_version, status.in_sync) == (1, True), status
    import tensorflow as tf
    loaded = tf.saved_model.load(str(ws / 'serving' / MODEL / '1'))
    assert {'serving_default', 'predict_raw'} <= set(loaded.signatures)
