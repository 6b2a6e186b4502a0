"""`tfx-canary run` with nothing changed: the last run's summaries, without importing TFX.

A re-run whose every input is unchanged is a full TFX cache hit, and its ~8 s
are almost all TensorFlow/TFX imports. So after an invocation that ended in a
*fixed point* (each of its runs started with the stable version it leaves
serving, so repeating it would hit the cache again) the runner records a key
of everything that decides the result, and the run summaries, in the workspace
(RECORD_FILE). An invocation whose key is the same prints those summaries and
says "nothing changed (cached)"; any difference takes the normal path.

The key covers: every field of each run's PipelineConfig (flags, resolved
span, paths), the span files' and the schema's contents, the model code's
fingerprint (what the Trainer's custom_config records), our own packages'
sources and the TFX stack's versions, each serving root's rollout.json bytes
and the stable version's SavedModel identity file (what BaselineModel
resolves), and the ML Metadata store's newest execution id (a deleted store,
another run, a promote audited into the store all move it).

A second record (PRODUCED_FILE) answers one run at a time: a run whose model
is staged now (the same inputs, apart from what serves, once staged the
version that is stable or canary, and its files are unchanged) is not
retrained. That is what a repeated `make run` meets: span 1 made the stable
v1, and retraining it against v1 would stage a near copy as canary over span
2's v2.
"""
import dataclasses
import datetime
import functools
import hashlib
import json
import os
from typing import List, Optional, Sequence, Tuple

from common import locations, mlmd, storage
from common.errors import TfxCanaryError
from pipeline.configs import PROJECT_ROOT, PipelineConfig
from rollout import fsutil, staging
from rollout import state as rollout_state
from runners.summary import RunSummary

RECORD_FILE = 'run-cache.json'
# Per run that staged a model: what it was trained from (the key without the
# serving state and store) -> the version it staged (already_serving()).
PRODUCED_FILE = 'run-produced.json'
PRODUCED_LOCK = '.run-produced.lock'
_PRODUCED_KEEP = 100   # Entries kept, newest first.
_FORMAT = 1
# Our code that decides what a run does (its pipeline, components, model code).
_CODE_PACKAGES = ('common', 'components', 'modules', 'pipeline', 'rollout', 'runners')
_STACK = ('tfx', 'tensorflow', 'tensorflow-transform', 'tensorflow-model-analysis',
          'tensorflow-data-validation', 'apache-beam', 'ml-metadata')

Preflighted = Tuple[PipelineConfig, Sequence[str]]   # local_runner.preflight's (config, files).


@dataclasses.dataclass(frozen=True)
class AlreadyServing:
    """A run whose model is staged now: the same inputs once produced `version`,
    which serves as `role` ('stable' or 'canary') with the same SavedModel."""
    summary: RunSummary
    version: int
    role: str
    recorded_at: str


@dataclasses.dataclass(frozen=True)
class CachedRuns:
    """What a cache hit answers with: the recorded invocation's summaries."""
    summaries: List[RunSummary]
    recorded_at: str


def _sha256_file(path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest


def _file_digest(path):
    """sha256 hex of a file, read once per process while it is unchanged: one
    invocation keys the same span files up to four times (lookup,
    already_serving, record_produced, record), and spans can be large."""
    st = os.stat(path)
    return _digest_of(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=1024)
def _digest_of(path, *_stat):
    return _sha256_file(path).hexdigest()


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


@functools.lru_cache(maxsize=None)   # This process's code: read once per invocation.
def _code_hash():
    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(PROJECT_ROOT, package)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(('.py', '.yaml')):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, PROJECT_ROOT).encode() + b'\0')
                    _sha256_file(path, digest)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _stack_versions():
    from importlib import metadata
    versions = {}
    for name in _STACK:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _rollout_state(config):
    """rollout.json's state now; None when it cannot be read."""
    path = locations.rollout_json_path(config.serving_root, config.model_name)
    try:
        return rollout_state.load_state(path, config.model_name)
    except (OSError, TfxCanaryError):
        return None


def _version_identity(config, version):
    """'<identity file>:<sha256>' of a staged version's SavedModel, or None."""
    model_dir = staging.version_dir(config.serving_root, config.model_name, version)
    for name in staging.IDENTITY_FILES:
        if os.path.isfile(os.path.join(model_dir, name)):
            return '%s:%s' % (name, _file_digest(os.path.join(model_dir, name)))
    return None


def stable_identity(config: PipelineConfig):
    """[stable version, sha256 of its SavedModel identity file] as BaselineModel
    would resolve it now ([0, None] when nothing is stable; None when
    rollout.json cannot be read: the run itself will say why)."""
    state = _rollout_state(config)
    if state is None:
        return None
    version = state.stable_version or 0
    return [version, _version_identity(config, version) if version else None]


def _serving_state(config):
    path = locations.rollout_json_path(config.serving_root, config.model_name)
    rollout_json = _file_digest(path) if os.path.isfile(path) else None
    return {'rollout_json': rollout_json, 'stable': stable_identity(config)}


def _newest_execution_id(metadata_path):
    """The store's newest execution id; None without a store."""
    if not os.path.isfile(metadata_path):
        return None
    from ml_metadata.metadata_store import metadata_store
    store = metadata_store.MetadataStore(mlmd.sqlite_config(metadata_path, mlmd.READ_ONLY))
    newest = store.get_executions(list_options=metadata_store.ListOptions(
        limit=1, order_by=metadata_store.OrderByField.ID, is_asc=False))
    return newest[0].id if newest else 0


def _inputs_key(config, files):
    """What decides the model a run trains: its config, data, schema, model code."""
    return {
        'config': json.loads(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)),
        'files': [[f, _file_digest(f)] for f in files],
        'schema': _file_digest(config.schema_path),
        'module_fingerprint': config.module_fingerprint(),
    }


def _run_key(config, files):
    """_inputs_key plus what it is judged against and the store it records into."""
    return dict(_inputs_key(config, files), serving=_serving_state(config),
                store=[config.metadata_path, _newest_execution_id(config.metadata_path)])


def _produced_key(config, files):
    """sha256 of what decides the model a run trains, with our code and the stack."""
    key = {'format': _FORMAT, 'code': _code_hash(), 'stack': _stack_versions(),
           'run': _inputs_key(config, files)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_produced(workspace):
    try:
        with open(os.path.join(workspace, PRODUCED_FILE), encoding='utf-8') as f:
            produced = json.load(f)
        return produced if produced.get('format') == _FORMAT else None
    except (OSError, ValueError, AttributeError):
        return None


def _write_json(path, content):
    # A temp file of its own per writer: two runs may record at once.
    fsutil.atomic_write_text(path, json.dumps(content, indent=1, sort_keys=True))


def record_produced(config: PipelineConfig, files: Sequence[str], summary: RunSummary):
    """Remembers which version a run staged, for already_serving()."""
    version = summary.pushed_version
    if version is None or not _cacheable([(config, files)]):
        return False
    identity = _version_identity(config, version)
    if identity is None:
        return False
    key = _produced_key(config, files)
    entry = {'key': key, 'version': version, 'identity': identity, 'recorded_at': _now(),
             'summary': dataclasses.asdict(summary)}
    # Read-modify-write under the workspace's lock: two runs that finish
    # together must not drop each other's entry.
    with fsutil.file_lock(os.path.join(config.workspace, PRODUCED_LOCK)):
        entries = (_read_produced(config.workspace) or {}).get('runs', [])
        entries = [entry] + [e for e in entries if e.get('key') != key]
        _write_json(os.path.join(config.workspace, PRODUCED_FILE),
                    {'format': _FORMAT, 'runs': entries[:_PRODUCED_KEEP]})
    return True


def already_serving(config: PipelineConfig, files: Sequence[str]) -> Optional[AlreadyServing]:
    """The model this run would retrain, when it is staged now as stable or
    canary: the same data, schema, code and flags once produced it, and its
    files are unchanged. Re-training it (warm-started from itself, judged
    against itself) would only stage a near copy over the canary. Else None."""
    if not _cacheable([(config, files)]):
        return None
    try:
        produced = _read_produced(config.workspace)
        state = _rollout_state(config)
        if produced is None or state is None:
            return None
        key = _produced_key(config, files)
        entry = next((e for e in produced['runs'] if e.get('key') == key), None)
        roles = {state.stable_version: 'stable', state.canary_version: 'canary'}
        if entry is None or entry['version'] not in roles:
            return None
        if _version_identity(config, entry['version']) != entry['identity']:
            return None
        return AlreadyServing(RunSummary(**entry['summary']), entry['version'],
                              roles[entry['version']], entry['recorded_at'])
    except Exception:  # pylint: disable=broad-except
        return None   # Whatever cannot be read: the normal path runs and reports it.


def invocation_key(runs: Sequence[Preflighted]) -> str:
    """sha256 of everything that decides what re-running `runs` would print."""
    key = {'format': _FORMAT, 'code': _code_hash(), 'stack': _stack_versions(),
           'runs': [_run_key(config, files) for config, files in runs]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _record_path(runs):
    return os.path.join(runs[-1][0].workspace, RECORD_FILE)


def _cacheable(runs):
    # --no-cache asks for execution; an object-store serving root is not read here.
    return bool(runs) and all(config.enable_cache and not storage.is_remote(config.serving_root)
                              for config, _ in runs)


def lookup(runs: Sequence[Preflighted]) -> Optional[CachedRuns]:
    """The recorded summaries when nothing changed since the recorded invocation, else None."""
    if not _cacheable(runs):
        return None
    try:
        with open(_record_path(runs), encoding='utf-8') as f:
            record = json.load(f)
        if record.get('format') != _FORMAT or record.get('key') != invocation_key(runs):
            return None
    except Exception:  # pylint: disable=broad-except
        # Whatever cannot be read (a locked or damaged store, a broken
        # rollout.json) is for the normal path to report, not the cache.
        return None
    return CachedRuns(summaries=[RunSummary(**s) for s in record['summaries']],
                      recorded_at=record['recorded_at'])


def record(runs: Sequence[Preflighted], summaries: Sequence[RunSummary], started_with):
    """Records the invocation if repeating it would be a full cache hit, else forgets any record.

    started_with: stable_identity() read before each run. A run that started
    with another stable version than the one now serving (a first model that
    became stable, a promote during the run) would be judged against the new
    one on a re-run: no fixed point, nothing recorded.
    """
    path = _record_path(runs)
    fixed_point = (_cacheable(runs)
                   and not any(s.stale_baseline for s in summaries)
                   and all(start is not None and start == stable_identity(config)
                           for (config, _), start in zip(runs, started_with)))
    if not fixed_point:
        if os.path.exists(path):
            os.remove(path)
        return False
    _write_json(path, {'format': _FORMAT, 'key': invocation_key(runs),
                       'recorded_at': _now(),
                       'summaries': [dataclasses.asdict(s) for s in summaries]})
    return True
