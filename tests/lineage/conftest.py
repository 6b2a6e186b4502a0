"""Fixtures for the lineage tests: rollout scenarios on copies of the real
pipeline workspace, each readable from SQLite and from a real MariaDB server.

The story (`lineage_story`): the session `pipeline_workspace` (span 1, then
span 2) copied, ending with stable v1 (span 1) and canary v2 (span 2). Whether
the span-2 retrain is blessed depends on the machine (its AUC may fall more
than the tolerance below v1's); when it is not, the copy gets one more run, a
gentle retrain on span 2 (20 steps, learning_rate 1e-6, warm-started from v1)
that stays within the tolerance, so the tests never depend on that verdict.

Scenarios (copies of the story):
  canary25  - then `rollout set-traffic 25`
  promoted  - as canary25, then `rollout promote` (v2 becomes stable)

`backend` parametrizes a test over 'sqlite' and 'mariadb'; `store_args`
gives the CLI flags that read a scenario's store on that backend. The
MariaDB copy is read with a SELECT-only user, so a passing test also shows
the CLI never writes.
"""
import os
import secrets
import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import DATA_ROOT, run_cli_quietly

MODEL = 'taxi'
PASSWORD_ENV = 'TFX_CANARY_TEST_MYSQL_PASSWORD'
SCENARIOS = {
    'canary25': [['set-traffic', '25', '--reason', 'error budget ok']],
    'promoted': [['set-traffic', '25', '--reason', 'error budget ok'],
                 ['promote', '--reason', 'canary healthy for a day']],
}


def _rollout(ws, args):
    code, out = run_cli_quietly(['rollout', *args, '--serving-root', str(ws / 'serving'),
                                 '--model-name', MODEL,
                                 '--metadata-path', str(ws / 'metadata.sqlite')])
    assert code == 0, out


def _canary_version(ws):
    import json
    with open(ws / 'serving' / MODEL / 'rollout.json') as f:
        return json.load(f).get('canary_version')


# The gentle retrain: warm-started from v1 and barely moved, it scores within
# the AUC tolerance of v1 on the same data, so it is blessed and staged.
RETRY_ARGS = ['--span', '2', '--train-steps', '20', '--model-hparam', 'learning_rate=1e-06']


@pytest.fixture(scope='session')
def lineage_story(pipeline_workspace, tmp_path_factory):
    """{'path', 'runs': [(code, stdout)], 'retried': bool, 'canary_run': stdout}."""
    ws = tmp_path_factory.mktemp('lineage-story') / 'workspace'
    shutil.copytree(pipeline_workspace['path'], ws, symlinks=True)
    runs = list(pipeline_workspace['runs'])
    retried = _canary_version(ws) != 2
    if retried:
        code, out = run_cli_quietly(['run', '--workspace', str(ws), '--data-root', DATA_ROOT,
                                     *RETRY_ARGS])
        assert code == 0, out
        runs.append((code, out))
        assert _canary_version(ws) == 2, 'the gentle retrain was not staged:\n' + out
    return {'path': ws, 'runs': runs, 'retried': retried, 'canary_run': runs[-1][1]}


@pytest.fixture(scope='session')
def scenario_workspaces(lineage_story, tmp_path_factory):
    """{name: workspace path} for every scenario (built once per session)."""
    result = {}
    for name, commands in SCENARIOS.items():
        ws = tmp_path_factory.mktemp('lineage-' + name) / 'workspace'
        shutil.copytree(lineage_story['path'], ws, symlinks=True)
        for args in commands:
            _rollout(ws, args)
        result[name] = ws
    return result


# ---------------------------------------------------------------- MariaDB

def _binary(*names):
    for name in names:
        found = shutil.which(name) or next(
            (os.path.join(d, name) for d in ('/usr/sbin', '/usr/bin', '/usr/local/sbin')
             if os.access(os.path.join(d, name), os.X_OK)), None)
        if found:
            return found
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class MariaDB:
    """A private mariadbd: own datadir, loopback port and socket, two users."""

    def __init__(self, root):
        self.server = _binary('mariadbd', 'mysqld')
        self.install = _binary('mariadb-install-db', 'mysql_install_db')
        if not self.server or not self.install:
            pytest.skip('MariaDB server binaries (mariadbd/mysqld, mariadb-install-db) are '
                        'not installed: apt-get install mariadb-server (.ci/run does)')
        self.root = root
        self.datadir = root / 'data'
        self.socket = root / 'mysqld.sock'
        self.log = root / 'mysqld.log'
        self.port = _free_port()
        self.rw_password = secrets.token_hex(8)
        self.ro_password = secrets.token_hex(8)
        self.process = None

    def _options(self):
        options = ['--no-defaults', f'--datadir={self.datadir}', '--skip-log-bin',
                   '--innodb-buffer-pool-size=32M', '--innodb-log-file-size=16M']
        if os.geteuid() == 0:
            options.append('--user=root')  # mariadbd refuses root without it.
        return options

    def start(self):
        subprocess.run([self.install, *self._options(), '--skip-test-db',
                        '--auth-root-authentication-method=normal'],
                       check=True, capture_output=True, timeout=180)
        init = self.root / 'init.sql'
        # rw: fills the databases (MLMD creates its tables); ro: what the CLI uses.
        init.write_text(
            f"CREATE USER 'lineage_rw'@'127.0.0.1' IDENTIFIED BY '{self.rw_password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO 'lineage_rw'@'127.0.0.1';\n"
            f"CREATE USER 'lineage_ro'@'127.0.0.1' IDENTIFIED BY '{self.ro_password}';\n"
            f"GRANT SELECT ON *.* TO 'lineage_ro'@'127.0.0.1';\n")
        with open(self.log, 'wb') as log:
            self.process = subprocess.Popen(
                [self.server, *self._options(), f'--socket={self.socket}',
                 f'--port={self.port}', '--bind-address=127.0.0.1', '--skip-name-resolve',
                 f'--pid-file={self.root / "mysqld.pid"}', f'--init-file={init}'],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('mariadbd exited at start-up:\n' + self.log.read_text()[-2000:])
            if 'ready for connections' in self.log.read_text(errors='replace'):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError('mariadbd did not start within 90 s:\n' + self.log.read_text()[-2000:])

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def connection_config(self, database, read_only=True):
        from lineage import connection
        if read_only:
            return connection.mysql_config('127.0.0.1', database, port=self.port,
                                           user='lineage_ro', password=self.ro_password)
        config = connection.mysql_config('127.0.0.1', database, port=self.port,
                                         user='lineage_rw', password=self.rw_password)
        config.mysql.skip_db_creation = False  # The copier creates the database.
        return config

    def cli_args(self, database):
        return ['--mysql-host', '127.0.0.1', '--mysql-port', str(self.port),
                '--mysql-database', database, '--mysql-user', 'lineage_ro',
                '--mysql-password-env', PASSWORD_ENV]


@pytest.fixture(scope='session')
def mariadb(tmp_path_factory):
    """A running MariaDB server for the session (skipped only if not installed)."""
    server = MariaDB(tmp_path_factory.mktemp('mariadb'))
    server.start()
    previous = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = server.ro_password
    yield server
    server.stop()
    if previous is None:
        os.environ.pop(PASSWORD_ENV, None)
    else:
        os.environ[PASSWORD_ENV] = previous


def copy_sqlite_to_mariadb(sqlite_path, server, database):
    """Copies a SQLite MLMD store into a new MariaDB database; returns the IdMaps."""
    from ml_metadata.metadata_store import metadata_store

    from lineage import connection, store_copy
    source = metadata_store.MetadataStore(connection.sqlite_config(sqlite_path))
    target = metadata_store.MetadataStore(server.connection_config(database, read_only=False))
    return store_copy.copy_store(source, target)


@pytest.fixture(scope='session')
def mariadb_scenarios(mariadb, scenario_workspaces):
    """{scenario: database name} with each scenario's store copied into MariaDB."""
    result = {}
    for name, ws in scenario_workspaces.items():
        database = 'lineage_' + name
        copy_sqlite_to_mariadb(ws / 'metadata.sqlite', mariadb, database)
        result[name] = database
    return result


@pytest.fixture(params=['sqlite', 'mariadb'])
def backend(request):
    return request.param


@pytest.fixture
def store_args(backend, scenario_workspaces, request):
    """store_args(scenario) -> CLI flags reading that scenario on this test's backend."""
    if backend == 'mariadb':
        server = request.getfixturevalue('mariadb')
        databases = request.getfixturevalue('mariadb_scenarios')

    def flags(scenario='canary25'):
        ws = scenario_workspaces[scenario]
        common = ['--serving-root', str(ws / 'serving'), '--model-name', MODEL]
        if backend == 'mariadb':
            return server.cli_args(databases[scenario]) + common
        return ['--metadata-path', str(ws / 'metadata.sqlite')] + common
    return flags
