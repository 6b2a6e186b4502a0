"""Runs a command in a child process and measures it: wall, CPU and peak memory."""
import dataclasses
import os
import subprocess
import time


@dataclasses.dataclass
class Measurement:
    wall_s: float
    cpu_s: float          # user + system of the child and everything it waited for
    peak_rss_mb: float    # largest resident set among them (Beam workers included)
    returncode: int
    log_path: str

    def log_tail(self, lines=30):
        with open(self.log_path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])


def run_measured(cmd, log_path, env=None, cwd=None):
    """Runs cmd to completion; stdout+stderr go to log_path.

    os.wait4 returns the rusage of exactly this child (and its reaped
    descendants), so back-to-back runs in one process do not blur together
    the way RUSAGE_CHILDREN totals would.
    """
    with open(log_path, 'w') as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                       peak_rss_mb=usage.ru_maxrss / 1024.0, returncode=proc.returncode,
                       log_path=log_path)


def _store(metadata_path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _executions(metadata_path, since_execution_id):
    """[(component name, execution)] after since_execution_id, oldest first."""
    store = _store(metadata_path)
    # tfx_canary.* types are our own audit records (rollout transitions), not components.
    types = {t.id: t.name.rsplit('.', 1)[-1] for t in store.get_execution_types()
             if not t.name.startswith('tfx_canary.')}
    return [(types[e.type_id], e) for e in sorted(store.get_executions(), key=lambda e: e.id)
            if e.id > since_execution_id and e.type_id in types]


def component_seconds(metadata_path, since_execution_id=0):
    """{component: seconds} from ML Metadata timestamps (the same method for any TFX run)."""
    result = {}
    for name, e in _executions(metadata_path, since_execution_id):
        seconds = (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0
        result[name] = result.get(name, 0.0) + seconds
    return result


def execution_states(metadata_path, since_execution_id=0):
    """{component: 'executed'|'cached'} for executions after since_execution_id."""
    from ml_metadata.proto import metadata_store_pb2
    return {name: 'cached' if e.last_known_state == metadata_store_pb2.Execution.CACHED else 'executed'
            for name, e in _executions(metadata_path, since_execution_id)}


def last_execution_id(metadata_path):
    if not os.path.exists(metadata_path):
        return 0
    return max((e.id for e in _store(metadata_path).get_executions()), default=0)
