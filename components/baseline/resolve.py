"""Pure helpers: which model is the baseline, and is a baseline artifact real?

The baseline is the *stable* version in `<serving_root>/<model>/rollout.json`,
the single source of truth for what serves. Not ML Metadata's "latest blessed
model": that may be a canary that was later rolled back, or a model blessed by
a run whose push failed, i.e. not what users get if the candidate is rejected.
Not the canary either: judging each canary against the previous canary would
let a chain of small regressions drift away from what actually serves.
"""
import dataclasses
import hashlib
import json
import os
from typing import Optional

from common.errors import TfxCanaryError
from rollout import staging
from rollout import state as state_lib
from rollout.errors import RolloutError

STATE_FILE = 'rollout.json'

# Custom properties of the BaselineModel output (and, copied, of the
# Evaluator's outputs): which baseline a run compared against.
HAS_BASELINE = 'has_baseline'            # 1 = a SavedModel is inside, 0 = none serving yet
BASELINE_VERSION = 'baseline_version'    # staged version number, 0 = none
BASELINE_SOURCE = 'baseline_source'      # human-readable: where the choice came from
BASELINE_URI = 'baseline_uri'            # the staged version directory that was copied
BASELINE_FINGERPRINT = 'baseline_fingerprint'  # sha256 of the SavedModel's identity file

# Exec properties the local driver fills in before the cache lookup, so the
# cache key names the resolved baseline (see driver.py).
RESOLVED_VERSION = 'resolved_baseline_version'
RESOLVED_FINGERPRINT = 'resolved_baseline_fingerprint'

# TF >= 2.9 writes fingerprint.pb (checksums of graph, signatures, variables);
# identical exports have identical fingerprints. saved_model.pb is the fallback.
_IDENTITY_FILES = ('fingerprint.pb', 'saved_model.pb')


class BaselineError(TfxCanaryError):
    """The rollout state names a baseline that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    version: int
    model_dir: str           # <serving_root>/<model>/<version>, a SavedModel
    fingerprint: str
    source: str


def _fileio():
    # Imported lazily: TFX's fileio pulls in TensorFlow, and the pure helpers
    # here are also used by code (the CLI, tests) that should start fast.
    from tfx.dsl.io import fileio
    return fileio


def is_remote(path: str) -> bool:
    return '://' in path


def state_path(serving_root: str, model_name: str) -> str:
    return os.path.join(staging.model_dir(serving_root, model_name), STATE_FILE)


def read_state(serving_root: str, model_name: str) -> state_lib.RolloutState:
    """The rollout state; an absent rollout.json means nothing was ever staged.

    Local paths go through rollout.state.load_state (the CLI's reader); object
    store paths (gs://) are read with TFX's fileio and validated the same way.
    """
    path = state_path(serving_root, model_name)
    if not is_remote(path):
        return state_lib.load_state(path, model_name)
    fileio = _fileio()
    if not fileio.exists(path):
        return state_lib.RolloutState.empty(model_name)
    with fileio.open(path, 'rb') as f:
        raw = f.read()
    try:
        data = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RolloutError('%s is not valid JSON (%s): restore it from %s.bak'
                           % (path, e, path)) from e
    return state_lib.RolloutState.from_dict(data, source=path, model_name=model_name)


def fingerprint(model_dir: str) -> Optional[str]:
    """sha256 of the SavedModel's identity file, or None if there is no SavedModel."""
    fileio = _fileio()
    for name in _IDENTITY_FILES:
        path = os.path.join(model_dir, name)
        if fileio.exists(path):
            with fileio.open(path, 'rb') as f:
                return '%s:%s' % (name, hashlib.sha256(f.read()).hexdigest())
    return None


def stable_baseline(serving_root: str, model_name: str,
                    version: Optional[int] = None) -> Optional[Baseline]:
    """The stable version now serving, or None if nothing has been staged yet.

    `version` pins the choice to a version resolved earlier (by the driver, so
    the cache key and the copied model agree even if a promotion lands in
    between); 0 pins "no baseline".
    """
    path = state_path(serving_root, model_name)
    if version is None:
        state = read_state(serving_root, model_name)
        version = state.stable_version or 0
        source = ('%s stable_version (phase %s)' % (path, state.phase) if version
                  else '%s: nothing staged yet (phase %s)' % (path, state.phase))
    else:
        source = '%s stable_version, resolved before the cache lookup' % path
    if not version:
        return None
    model_dir = staging.version_dir(serving_root, model_name, version)
    model_fingerprint = fingerprint(model_dir)
    if model_fingerprint is None:
        # Serving is broken or the staging area is not the one the pusher
        # writes: comparing against nothing would bless blindly, so stop.
        raise BaselineError(
            '%s names stable version %d, but %s holds no SavedModel: check that serving_root '
            'is the staging area the pusher writes, and run `tfx-canary rollout status`'
            % (path, version, model_dir))
    return Baseline(version=version, model_dir=model_dir, fingerprint=model_fingerprint,
                    source=source)


def no_baseline_source(serving_root: str, model_name: str) -> str:
    return '%s: nothing staged yet' % state_path(serving_root, model_name)


def has_baseline(artifact) -> bool:
    """Whether a Model artifact really holds a baseline model.

    Artifacts without the property (e.g. from a TFX Resolver) are real models.
    On KFP the property comes back as a JSON number, which
    get_int_custom_property also reads.
    """
    if not artifact.has_custom_property(HAS_BASELINE):
        return True
    return artifact.get_int_custom_property(HAS_BASELINE) == 1


def present(artifacts):
    """The artifacts of a baseline channel that hold a model ([] = no baseline)."""
    return [a for a in (artifacts or []) if has_baseline(a)]
