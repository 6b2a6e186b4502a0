"""Opening an ML Metadata store for reading: SQLite, MySQL/MariaDB or gRPC.

Lineage only reads. SQLite is opened in READONLY mode, so not even a schema
upgrade can happen; MySQL should be given a SELECT-only user (MLMD's client
creates its tables when it connects to an empty database, which such a user
refuses, and that is reported as "not an ML Metadata store"); the gRPC server
decides for itself. `ReadOnlyStore` exposes only MLMD's `get_*` calls, so
nothing in this package can write by mistake.
"""

import contextlib
import os
import socket
import sys
import tempfile

from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2

from common import locations
from common import mlmd
from lineage.errors import StoreUnavailableError

DEFAULT_MYSQL_PORT = 3306
DEFAULT_GRPC_PORT = 8080
# A gRPC call to a host that drops packets would otherwise wait forever.
GRPC_TIMEOUT_SECONDS = 15.0


def sqlite_config(path):
    """ConnectionConfig for an existing SQLite store, opened READONLY."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise StoreUnavailableError(
            f'ML Metadata store {path} does not exist: pass --workspace or '
            f'--metadata-path with the metadata.sqlite of a pipeline workspace '
            f'(default ./{locations.metadata_path_in(locations.DEFAULT_WORKSPACE)}), or '
            f'--mysql-host / --grpc-host')
    return mlmd.sqlite_config(path, mlmd.READ_ONLY)


def mysql_config(host, database, port=DEFAULT_MYSQL_PORT, user='root',
                 password=None, socket=None):
    """ConnectionConfig for an MLMD store in a MySQL-compatible database."""
    if not database:
        raise StoreUnavailableError(
            '--mysql-database is required with --mysql-host (the database '
            'holding the ML Metadata tables)')
    config = metadata_store_pb2.ConnectionConfig()
    config.mysql.host = host
    config.mysql.port = int(port)
    config.mysql.database = database
    config.mysql.user = user or ''
    if password:
        config.mysql.password = password
    if socket:
        config.mysql.socket = socket
    # Never create a database: a typo in --mysql-database must fail, not
    # leave an empty database behind.
    config.mysql.skip_db_creation = True
    return config


def grpc_config(host, port=DEFAULT_GRPC_PORT, timeout=GRPC_TIMEOUT_SECONDS):
    """MetadataStoreClientConfig for an MLMD gRPC server."""
    config = metadata_store_pb2.MetadataStoreClientConfig()
    config.host = host
    config.port = int(port)
    config.client_timeout_sec = timeout
    return config


def describe(config):
    """A short human name for the store a config points at."""
    if isinstance(config, metadata_store_pb2.MetadataStoreClientConfig):
        return f'MLMD gRPC server {config.host}:{config.port}'
    if config.HasField('mysql'):
        where = config.mysql.socket or f'{config.mysql.host}:{config.mysql.port}'
        return f'MySQL database {config.mysql.database!r} at {where}'
    if config.HasField('sqlite'):
        return f'SQLite store {config.sqlite.filename_uri}'
    return 'the ML Metadata store'


@contextlib.contextmanager
def _native_stderr_captured():
    """Collects what MLMD's C++ code writes to fd 2 while the block runs.

    A failed MySQL connect makes MLMD log several glog lines straight to the
    process's stderr; the CLI promises one `error:` line, so the text is
    captured here and the gist goes into the exception instead.
    """
    captured = {'text': ''}
    try:
        saved = os.dup(2)
    except OSError:  # No fd 2 (embedded interpreter): nothing to capture.
        yield captured
        return
    with tempfile.TemporaryFile(mode='w+b') as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured['text'] = sink.read().decode('utf-8', 'replace')


def _first_line(text, limit=300):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ''
    return line if len(line) <= limit else line[:limit] + '...'


def _hint(config, message):
    """What the operator should check, given MLMD's error text."""
    text = message.lower()
    if isinstance(config, metadata_store_pb2.MetadataStoreClientConfig):
        return 'check --grpc-host/--grpc-port and that the MLMD server is running'
    if config.HasField('mysql'):
        if 'create command denied' in text:
            return ('the database has no ML Metadata tables (it is not an MLMD '
                    'store); check --mysql-database')
        if 'access denied' in text:
            return ('check --mysql-user, the password in the variable named by '
                    '--mysql-password-env, and the grants on --mysql-database')
        if 'mysql_real_connect' in text and not config.mysql.socket:
            # MLMD reports a refused login and a dead server alike (the
            # detail goes to its C++ log): a plain TCP connect tells them apart.
            if _port_answers(config.mysql.host, config.mysql.port):
                return ('the server answered but refused the login: check '
                        '--mysql-user and the password in the variable named by '
                        '--mysql-password-env')
            return (f'nothing answers at {config.mysql.host}:{config.mysql.port}: check '
                    f'--mysql-host/--mysql-port and that the server is running')
        return ('check --mysql-host/--mysql-port and that the server is '
                'running and reachable')
    return ('check --metadata-path: it must be the metadata.sqlite written by '
            'a tfx-canary run')


def _port_answers(host, port, timeout=3.0):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class ReadOnlyStore:
    """An MLMD store restricted to reads, with errors made CLI-friendly.

    Every MLMD failure (server gone, bad grants, corrupt file) becomes a
    StoreUnavailableError naming the store, so callers never see a traceback
    from deep inside MLMD.
    """

    def __init__(self, store, config):
        self._store = store
        self.config = config
        self.description = describe(config)

    def __getattr__(self, name):
        if not name.startswith('get_'):
            raise AttributeError(
                f'{name}: the lineage store is read-only (only get_* calls)')
        method = getattr(self._store, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except (mlmd_errors.StatusError, RuntimeError) as exc:
                raise StoreUnavailableError(
                    f'{self.description} failed to answer {name} '
                    f'({_first_line(exc)}): {_hint(self.config, str(exc))}'
                ) from exc
        return call


def open_store(config):
    """Connects to the store and checks it answers; returns a ReadOnlyStore."""
    from ml_metadata.metadata_store import metadata_store

    description = describe(config)
    with _native_stderr_captured() as native:
        try:
            store = metadata_store.MetadataStore(config)
            # gRPC connects lazily: one cheap call proves the server is there.
            store.get_context_types()
            error = None
        except (mlmd_errors.StatusError, RuntimeError, ValueError) as exc:
            error = exc
    if error is not None:
        detail = _first_line(error) or _first_line(native['text']) or type(error).__name__
        raise StoreUnavailableError(
            f'cannot open {description} ({detail}): {_hint(config, str(error))}'
        ) from error
    return ReadOnlyStore(store, config)
