"""Shared test set-up: Keras 2 for TFX, quiet TF, and the project's data paths."""
import os

# Before any test imports TensorFlow (see runners/cli.py for why).
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(PROJECT_ROOT, 'data', 'taxi')
SCHEMA_PATH = os.path.join(DATA_ROOT, 'schema.pbtxt')

# The caller's workspaces: the project's and the one under the directory
# pytest was started from (both are where `make run` / `tfx-canary run` write).
CALLER_WORKSPACES = (os.path.join(PROJECT_ROOT, 'workspace'),
                     os.path.join(os.getcwd(), 'workspace'))


@pytest.hookimpl(trylast=True)   # After pytest-randomly's shuffle (tryfirst).
def pytest_collection_modifyitems(config, items):
    """Under make test's workers (pytest-xdist), modules with end-to-end tests
    go first, each group still in the shuffled order: they take minutes each,
    and the unit modules then fill the workers' tails instead of one worker
    running a long module alone at the end. Of those, the ones that do not
    need the shared make-run workspace go first, so that one worker builds it
    while the other has other work instead of waiting for it."""
    if not os.environ.get('PYTEST_XDIST_WORKER'):
        return
    slow, shared = set(), set()
    for item in items:
        if item.get_closest_marker('e2e'):
            slow.add(item.module.__name__)
        if 'pipeline_workspace' in getattr(item, 'fixturenames', ()):
            shared.add(item.module.__name__)

    def rank(item):
        module = item.module.__name__
        return 2 if module not in slow else (1 if module in shared else 0)
    items.sort(key=rank)   # Stable: keeps the shuffle within each group.


@pytest.fixture(autouse=True)
def _no_caller_workspace(request):
    """Fails the test if it (or its fixtures) read or wrote ./workspace."""
    from tests.workspace_guard import WorkspaceGuard, changed
    guard = WorkspaceGuard(CALLER_WORKSPACES)
    before = guard.snapshot()
    guard.start()
    try:
        yield
    finally:
        accessed = guard.stop()
    written = changed(before, guard.snapshot())
    if accessed or written:
        pytest.fail('%s touched the caller\'s workspace (tests must use tmp paths and pass '
                    '--workspace/--metadata-path/--serving-root): %s'
                    % (request.node.nodeid, '; '.join((accessed + written)[:5])), pytrace=False)


@pytest.fixture(scope='session')
def schema():
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(SCHEMA_PATH) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(','.join(header) + '\n')
        for row in rows:
            f.write(','.join(str(v) for v in row) + '\n')


def one_error_line(code, out, err):
    """The CLI's contract for bad input: exit 2, nothing on stdout, one `error:` line."""
    assert code == 2, (out, err)
    assert out == ''
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


def readonly_store(workspace):
    """The ML Metadata store of a workspace, opened read-only."""
    from ml_metadata.metadata_store import metadata_store

    from common import locations, mlmd
    return metadata_store.MetadataStore(
        mlmd.sqlite_config(locations.metadata_path_in(str(workspace)), mlmd.READ_ONLY))


def run_cli_quietly(argv):
    """Runs `tfx-canary ARGV` in this process; returns (exit code, stdout text)."""
    import contextlib
    import io

    from runners import cli
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(list(argv))
    return code, buf.getvalue()


def tfx_canary_command():
    """The installed `tfx-canary` (what the Makefile calls), else the module."""
    import sys
    script = os.path.join(os.path.dirname(sys.executable), 'tfx-canary')
    return [script] if os.access(script, os.X_OK) else [sys.executable, '-m', 'runners.cli']


def split_runs(code, out):
    """[(code, stdout)] per span of one `run --span A --span B` invocation: each
    span's part starts at its 'Running ...' line (the exit status is shared)."""
    lines = out.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith('Running ')]
    bounds = [0] + starts[1:] + [len(lines)]
    return [(code, ''.join(lines[a:b])) for a, b in zip(bounds, bounds[1:])]


def once_per_session(tmp_path_factory, name, build):
    """build(folder) -> a JSON-able result, run once per test session, also when
    pytest-xdist's workers (make test) each ask for it: the first builds it
    under a lock in the session's shared temp folder, the others wait and read
    its result. Without xdist it is an ordinary session fixture's work."""
    import fcntl
    import json
    if not os.environ.get('PYTEST_XDIST_WORKER'):
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent   # This session's, all workers'.
    folder, result = shared / name, shared / (name + '.json')
    with open(shared / (name + '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            folder.mkdir()
            value = build(folder)
            tmp = result.with_suffix('.tmp')
            tmp.write_text(json.dumps(value))
            os.replace(tmp, result)
        return json.loads(result.read_text())


MAKE_RUN_ARGS = ['run', '--span', '1', '--span', '2']   # The Makefile's `run` target.


def _make_run(cwd):
    import subprocess
    process = subprocess.run(tfx_canary_command() + MAKE_RUN_ARGS,
                             cwd=cwd, capture_output=True, text=True, timeout=1800)
    return {'cwd': str(cwd), 'returncode': process.returncode, 'stdout': process.stdout,
            'stderr': process.stderr}


@pytest.fixture(scope='session')
def pipeline_workspace(tmp_path_factory):
    """The workspace `make run` leaves, made once per session the way `make run`
    makes it: `tfx-canary run --span 1 --span 2`, the installed command, in a
    folder whose ./workspace is this one (span 1, then span 2 against it).

    Returns {'path': Path, 'cwd': Path, 'process': CompletedProcess,
    'runs': [(code, stdout of span 1), (code, stdout of span 2)]}. Shared by the
    end-to-end, lineage, serving and `make run` tests (and by xdist's workers);
    tests that change it must work on a copy (`copy_workspace`).
    """
    import pathlib
    import subprocess
    made = once_per_session(tmp_path_factory, 'make-run', _make_run)
    cwd = pathlib.Path(made['cwd'])
    process = subprocess.CompletedProcess(tfx_canary_command() + MAKE_RUN_ARGS, made['returncode'],
                                          made['stdout'], made['stderr'])
    runs = split_runs(process.returncode, process.stdout)
    assert len(runs) == 2, process.stdout + process.stderr
    return {'path': cwd / 'workspace', 'cwd': cwd, 'process': process, 'runs': runs}


@pytest.fixture
def copy_workspace(pipeline_workspace, tmp_path):
    """A private copy of the shared pipeline workspace, safe to change."""
    import shutil
    dst = tmp_path / 'workspace'
    shutil.copytree(pipeline_workspace['path'], dst, symlinks=True)
    return dst
