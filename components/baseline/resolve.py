"""Pure helpers: which model is the baseline, and is a baseline artifact real?

The baseline is the *stable* version in `<serving_root>/<model>/rollout.json`,
the single source of truth for what serves. Not ML Metadata's "latest blessed
model": that may be a canary that was later rolled back, or a model blessed by
a run whose push failed, i.e. not what users get if the candidate is rejected.
Not the canary either: judging each canary against the previous canary would
let a chain of small regressions drift away from what actually serves.
"""
import dataclasses
from typing import Optional

from common import locations
from common import mlmd_names as names
from common.errors import TfxCanaryError
from rollout import staging
from rollout import state as state_lib

# Custom properties of the BaselineModel output (and, copied, of the
# Evaluator's outputs): which baseline a run compared against.
# Their names are common/mlmd_names.py's (lineage and the run summary read them).
HAS_BASELINE = names.HAS_BASELINE
BASELINE_VERSION = names.BASELINE_VERSION
BASELINE_SOURCE = names.BASELINE_SOURCE
BASELINE_URI = names.BASELINE_URI
BASELINE_FINGERPRINT = names.BASELINE_FINGERPRINT

# Exec properties the local driver fills in before the cache lookup, so the
# cache key names the resolved baseline (see driver.py).
RESOLVED_VERSION = 'resolved_baseline_version'
RESOLVED_FINGERPRINT = 'resolved_baseline_fingerprint'


class BaselineError(TfxCanaryError):
    """The rollout state names a baseline that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    version: int
    model_dir: str           # <serving_root>/<model>/<version>, a SavedModel
    fingerprint: str
    source: str


def stable_baseline(serving_root: str, model_name: str,
                    version: Optional[int] = None) -> Optional[Baseline]:
    """The stable version now serving, or None if nothing has been staged yet.

    `version` pins the choice to a version resolved earlier (by the driver, so
    the cache key and the copied model agree even if a promotion lands in
    between); 0 pins "no baseline".
    """
    # Local paths and object-store URIs (a gs:// serving root on Kubeflow) alike.
    path = locations.rollout_json_path(serving_root, staging.check_model_name(model_name))
    if version is None:
        state = state_lib.load_state(path, model_name)
        version = state.stable_version or 0
        source = ('%s stable_version (phase %s)' % (path, state.phase) if version
                  else '%s: nothing staged yet (phase %s)' % (path, state.phase))
    else:
        source = '%s stable_version, resolved before the cache lookup' % path
    if not version:
        return None
    model_dir = staging.version_dir(serving_root, model_name, version)
    model_fingerprint = staging.saved_model_fingerprint(model_dir)
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
    return '%s: nothing staged yet' % locations.rollout_json_path(serving_root, model_name)


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
