"""run-local's pre-started interpreter (runners/kfp_local/prestart.py): a task
forked from it must behave as `python -m MODULE ARGS` in a fresh interpreter
would, as seen from outside: argv, working folder, environment, log, exit
status, and nothing left over from an earlier task. Real processes; the
modules run are small ones written here, so no TensorFlow is imported."""
import os
import signal
import sys

import pytest

from runners.kfp_local import prestart

TASK = '''
import json, os, sys
state = json.loads(os.environ.get('TASK_STATE', '{}'))
print('argv', json.dumps(sys.argv[1:]))
print('cwd', os.getcwd())
print('env', os.environ.get('ONLY_IN_TASK_ENV'))
print('main', __name__)
print('left over', getattr(json, 'left_by_an_earlier_task', None))
json.left_by_an_earlier_task = 'yes'
print('stdin', repr(sys.stdin.read()))
sys.stderr.write('to stderr\\n')
how = sys.argv[1] if len(sys.argv) > 1 else ''
if how == 'exit':
    sys.exit(int(sys.argv[2]))
if how == 'raise':
    raise ValueError('the task failed here')
if how == 'kill':
    sys.stdout.flush()
    os.kill(os.getpid(), 9)
'''


@pytest.fixture
def task_dir(tmp_path):
    folder = tmp_path / 'task'
    folder.mkdir()
    (folder / 'demo_task.py').write_text(TASK)   # `python -m` finds it in the cwd.
    return folder


@pytest.fixture
def server(tmp_path):
    env = dict(os.environ, ONLY_IN_TASK_ENV='from the task env')
    started = prestart.Prestarted(['json.tool'], ['email.parser.Parser'], env, str(tmp_path))
    yield started
    started.close()


def _run(server, task_dir, log, *args):
    log.write_text('$ header written by the runner\n')
    return server.call(['-m', 'demo_task'] + list(args), str(task_dir), server.env, str(log))


def test_a_forked_task_sees_what_python_m_would_give_it(server, task_dir, tmp_path):
    log = tmp_path / 'task.log'
    assert _run(server, task_dir, log, 'ok', '--flag', 'x y') == 0
    lines = log.read_text().splitlines()
    assert lines[0] == '$ header written by the runner'   # Appended, not overwritten.
    assert 'argv ["ok", "--flag", "x y"]' in lines
    assert 'cwd %s' % task_dir in lines
    assert 'env from the task env' in lines and 'main __main__' in lines
    assert "stdin ''" in lines and 'to stderr' in lines   # No request line leaks in.
    assert server.note is None and server.ready_seconds is not None


def test_exit_status_is_what_the_interpreter_would_report(server, task_dir, tmp_path):
    log = tmp_path / 'task.log'
    assert _run(server, task_dir, log, 'exit', '3') == 3
    assert _run(server, task_dir, log, 'raise') == 1
    text = log.read_text()
    assert 'Traceback' in text and 'ValueError: the task failed here' in text
    assert _run(server, task_dir, log, 'kill') == -signal.SIGKILL
    assert _run(server, task_dir, log, 'ok') == 0   # The server outlives its children.


def test_each_task_starts_from_the_servers_state_not_the_last_tasks(server, task_dir, tmp_path):
    log = tmp_path / 'task.log'
    for _ in range(2):
        assert _run(server, task_dir, log, 'ok') == 0
        assert 'left over None' in log.read_text().splitlines()


def test_what_it_cannot_run_is_left_to_a_fresh_interpreter(server):
    assert server.accepts(['-m', 'demo_task'], server.env)
    assert not server.accepts(['script.py'], server.env)
    assert not server.accepts(['-m', 'demo_task'], dict(server.env, OTHER='1'))


def test_a_dead_server_is_reported_and_the_caller_can_run_cold(server, task_dir, tmp_path):
    assert _run(server, task_dir, tmp_path / 'task.log', 'ok') == 0
    server._proc.kill()
    server._proc.wait()
    assert _run(server, task_dir, tmp_path / 'task.log', 'ok') is None
    assert 'stopped' in server.note


def test_a_server_that_cannot_start_is_reported(task_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'executable', '/bin/false')   # An interpreter that exits at once.
    started = prestart.Prestarted([], [], dict(os.environ), str(tmp_path))
    try:
        assert _run(started, task_dir, tmp_path / 'task.log', 'ok') is None
        assert 'did not start' in started.note
    finally:
        started.close()


def test_it_preloads_what_entry_points_import_but_never_the_entry_points():
    modules = prestart.modules_to_preload(
        ['json.tool'], ['email.parser.Parser', 'xml.dom.minidom.parseString'])
    assert 'json.tool' not in modules                    # Runs as __main__ in the child.
    assert 'argparse' in modules and 'json' in modules   # json.tool's own imports.
    assert 'email.parser' in modules and 'xml.dom.minidom' in modules
    assert len(modules) == len(set(modules))
    assert prestart.modules_to_preload(['no_such_module_here'], []) == []


def test_listing_what_to_preload_does_not_import_the_entry_point(tmp_path, monkeypatch):
    (tmp_path / 'entry_never_imported.py').write_text('import json\nraise SystemExit(9)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert prestart.modules_to_preload(['entry_never_imported'], []) == ['json']
    assert 'entry_never_imported' not in sys.modules
