"""`tfx-canary loop`: its start checks, and `serve` stopped on failure, Ctrl-C and SIGTERM.

No pipeline run: a workspace serving the tiny model (tests/serving/tiny_serving.py)
as stable v1, started with --skip-initial-train, so the loop gets as far as a
real `serve` subprocess and the replay before the step the test breaks.
"""
import os
import re
import signal

import pytest

from rollout import control
from runners import loop
from serving import replay
from tests.conftest import DATA_ROOT, SCHEMA_PATH, one_error_line, run_cli_quietly
from tests.serving import tiny_serving


@pytest.fixture
def tiny_workspace(tmp_path):
    """A workspace whose serving/ has the tiny model as stable v1, nothing else."""
    workspace = tmp_path / 'ws'
    controller = control.RolloutController(str(workspace / 'serving'), tiny_serving.MODEL)
    controller.stage(tiny_serving.save_raw_model(str(tmp_path / 'export'), 0.1))
    return workspace


def _options(workspace, **changes):
    fields = dict(workspace=str(workspace), data_root=DATA_ROOT, schema_path=SCHEMA_PATH,
                  feature_keys=('fare', 'company'), skip_initial_train=True, replay_rows=20,
                  loop_data_root=str(workspace.parent / 'loop-data'))
    fields.update(changes)
    return loop.LoopOptions(**fields)


def _serve_pids(lines):
    return [int(m.group(1)) for m in (re.search(r'serve pid (\d+) on', l) for l in lines) if m]


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Reaped by the loop's wait(): a zombie would still be "there" for kill(0).
    with open('/proc/%d/stat' % pid) as f:
        return f.read().split()[2] == 'Z'


def _break_labels(monkeypatch, how):
    def deliver(self, url, model_name, **kwargs):
        if how == 'fail':
            raise replay.ReplayError('feedback to %s refused (503): disk full' % url)
        signal.raise_signal(getattr(signal, how))
        raise AssertionError('the signal did not interrupt the loop')
    monkeypatch.setattr(replay.Replay, 'deliver_labels', deliver)


@pytest.fixture
def terminal_sigint():
    """Ctrl-C as Python in a terminal gets it (KeyboardInterrupt): pytest-xdist's
    workers (make test) ignore SIGINT, and so would this test's process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize('how, raised', [
    ('fail', replay.ReplayError), ('SIGINT', KeyboardInterrupt),
    ('SIGTERM', loop.LoopInterrupted)])
def test_serve_is_stopped_when_a_step_fails_or_a_signal_arrives(tiny_workspace, monkeypatch,
                                                                 terminal_sigint, how, raised):
    _break_labels(monkeypatch, how)
    before = signal.getsignal(signal.SIGTERM)
    lines = []
    with pytest.raises(raised):
        loop.run_loop(_options(tiny_workspace), out=lines.append)
    pids = _serve_pids(lines)
    assert len(pids) == 1, lines
    assert _gone(pids[0]), 'serve (pid %d) still runs after %s' % (pids[0], how)
    # It got as far as real traffic: the replay line counts requests answered.
    assert any('20 answered 200 (v1 stable 20)' in line for line in lines), lines
    assert signal.getsignal(signal.SIGTERM) == before  # the loop's handler is undone
    assert not loop._LIVE


def test_the_serve_process_stops_cleanly_and_publishes_its_capture(tiny_workspace, tmp_path):
    from serving import capture
    server = loop.ServeProcess(
        ['--workspace', str(tiny_workspace), '--capture-rate', '1', '--capture-schema',
         SCHEMA_PATH], tiny_serving.MODEL, str(tmp_path / 'serve.log'))
    with server:
        r = replay.Replay.from_csv(os.path.join(DATA_ROOT, 'span-2', 'data.csv'), _schema(),
                                   ('fare', 'company'), 'tips', limit=5)
        assert r.send(server.url, tiny_serving.MODEL).ok == 5
    assert server.returncode == 0, server.log_tail()
    parts = capture.part_files(str(tiny_workspace / 'capture'), 1)
    assert sum(1 for _ in capture.read_parts(parts)) == 5
    assert server.stop() == 0  # stopping twice is harmless


def _schema():
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(SCHEMA_PATH) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def test_a_serve_that_exits_at_start_is_an_error_with_its_log(tmp_path):
    (tmp_path / 'serving').mkdir()   # no models: serve exits 2
    server = loop.ServeProcess(['--serving-root', str(tmp_path / 'serving')], 'taxi',
                               str(tmp_path / 'serve.log'))
    with pytest.raises(loop.LoopError, match=r'serve exited with status 2 before answering'
                                             r'(.|\n)*error: no models under'):
        server.start()


def _loop_cli(*args):
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, out = run_cli_quietly(['loop', *map(str, args)])
    return code, out, err.getvalue()


@pytest.mark.parametrize('args, fragment', [
    (['--capture-rate', '0'], '--capture-rate must be above 0 and at most 1'),
    (['--capture-rate', '1.5'], '--capture-rate must be above 0 and at most 1'),
    (['--replay-rows', '0'], '--replay-rows must be at least 1, got 0'),
    (['--rows-per-request', '0'], '--rows-per-request must be at least 1'),
    (['--replay-span', '9'], 'span 9 not found in'),
    (['--policy', '/nope.yaml'], 'policy /nope.yaml does not exist'),
])
def test_bad_flags_are_one_error_line(tmp_path, args, fragment):
    code, out, err = _loop_cli('--workspace', tmp_path / 'ws', *args)
    assert fragment in one_error_line(code, out, err)
    assert not (tmp_path / 'ws').exists()   # refused before anything was written


def test_the_workspace_must_be_fresh_or_serve_a_stable_without_canary(tiny_workspace):
    code, out, err = _loop_cli('--workspace', tiny_workspace)
    assert 'already holds a pipeline run' in one_error_line(code, out, err)
    code, out, err = _loop_cli('--workspace', tiny_workspace.parent / 'empty',
                               '--skip-initial-train')
    assert '--skip-initial-train: nothing serves in' in one_error_line(code, out, err)
    controller = control.RolloutController(str(tiny_workspace / 'serving'), tiny_serving.MODEL)
    controller.stage(tiny_serving.save_raw_model(str(tiny_workspace.parent / 'v2'), 0.2))
    code, out, err = _loop_cli('--workspace', tiny_workspace, '--skip-initial-train')
    assert 'canary v2 is in progress' in one_error_line(code, out, err)


def test_help_explains_the_loop():
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        from runners import cli
        cli.main(['loop', '--help'])
    text = ' '.join(out.getvalue().split())
    for words in ('replay span 2 through the REST predict API', 'POST /v1/models/NAME:feedback',
                  'capture export', 'rollout analyze --apply', 'lineage show --stable',
                  '--skip-initial-train', 'serve is stopped on exit, on failure and on Ctrl-C'):
        assert words in text, words
