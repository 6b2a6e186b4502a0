"""Loaded model versions and what each model serves right now (its plan).

A model's plan (stable, canary, traffic, loaded versions) is an immutable
object swapped in one assignment. A change to rollout.json is applied as:
load every new version (and warm it up) while the old plan keeps serving ->
swap -> keep the versions that left the plan "draining" until their in-flight
requests finish -> drop them. A request therefore never sees a half-loaded
version, and a promote or rollback never fails a request already running.
"""
import contextlib
import dataclasses
import logging
import os
import re
import threading
import time

from common import locations
from rollout import state as state_mod
from rollout import staging
from rollout.errors import RolloutError
from serving import codec
from serving.errors import ServingError, invalid_argument, not_found

logger = logging.getLogger(__name__)

STABLE = 'stable'
CANARY = 'canary'
# Canonical status names by tf.errors code number (identical to TF Serving's).
_TF_CODES = {1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED',
             5: 'NOT_FOUND', 6: 'ALREADY_EXISTS', 7: 'PERMISSION_DENIED',
             8: 'RESOURCE_EXHAUSTED', 9: 'FAILED_PRECONDITION', 10: 'ABORTED',
             11: 'OUT_OF_RANGE', 12: 'UNIMPLEMENTED', 13: 'INTERNAL', 14: 'UNAVAILABLE',
             15: 'DATA_LOSS', 16: 'UNAUTHENTICATED'}


def tf_error_message(text):
    """The useful part of an eager OpError message, as TF Serving would report it.

    Eager errors wrap the kernel's message in "Graph execution error:",
    "Detected at node ..." and op/node annotations that mean nothing to a
    REST client.
    """
    noise = ('Graph execution error', 'Detected at node', '<stack traces')
    kept = []
    for line in text.split('\n'):
        line = re.sub(r'\s*\[\[\{\{node [^}]*\}\}\]\]', '', line)
        line = re.sub(r'\s*\[Op:[^\]]*\]', '', line).strip()
        if line and not line.startswith(noise):
            kept.append(line)
    return ' '.join(kept) or text.strip()


def _proto_dict(message):
    from google.protobuf import json_format
    # The options TF Serving's REST API prints its protos with.
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def _input_specs(signature_def):
    from tensorflow.core.framework import types_pb2
    specs = {}
    for alias, info in signature_def.inputs.items():
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(
            None if d.size < 0 else d.size for d in shape.dim)
        specs[alias] = codec.InputSpec(alias, types_pb2.DataType.Name(info.dtype), dims)
    return specs


def _warm_up_inputs(specs):
    """One plausible row per input: zeros, or '' for strings."""
    import numpy as np
    arrays = {}
    for alias, spec in specs.items():
        shape = tuple(1 if d is None else d for d in (spec.shape or (1,)))
        if spec.dtype == 'DT_STRING':
            arrays[alias] = np.full(shape, b'', dtype=object)
        else:
            arrays[alias] = np.zeros(shape, dtype=codec.numpy_dtype(spec.dtype))
    return arrays


def _flat_inputs(function):
    """[(name, NumPy dtype, shape)] in the order the signature's flat function takes them.

    None unless every parameter is a keyword-only tensor (what a SignatureDef
    always gives: one TensorSpec per input alias), or if this TensorFlow does
    not expose what the structured call itself uses.
    """
    import tensorflow as tf
    try:
        parameters = list(function.function_type.parameters.values())
        function._call_flat  # noqa: B018  # pylint: disable=pointless-statement
        function.captured_inputs  # noqa: B018  # pylint: disable=pointless-statement
    except AttributeError:
        return None
    inputs = []
    for p in parameters:
        spec = p.type_constraint
        if p.kind is not p.KEYWORD_ONLY or type(spec) is not tf.TensorSpec:
            return None
        shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
        inputs.append((p.name, spec.dtype.as_numpy_dtype, shape))
    # The structured call passes keyword-only arguments sorted by name
    # (FunctionType.unpack_inputs).
    return sorted(inputs, key=lambda i: i[0])


def _matches(arrays, inputs):
    """True if `arrays` are exactly the tensors `inputs` declares (names, dtypes, shapes)."""
    if len(arrays) != len(inputs):
        return False
    for name, dtype, shape in inputs:
        array = arrays.get(name)
        if array is None or array.dtype != dtype:
            return False
        if shape is not None and (array.ndim != len(shape) or any(
                want is not None and want != got for want, got in zip(shape, array.shape))):
            return False
    return True


class InFlight:
    """Counts the callers using a version, so draining waits for them (a base
    of ModelVersion and of the router's upstream versions)."""

    def __init__(self):
        self.in_flight = 0
        self._in_flight_lock = threading.Lock()

    @contextlib.contextmanager
    def use(self):
        """Counts the caller as in flight, so draining waits for it."""
        with self._in_flight_lock:
            self.in_flight += 1
        try:
            yield self
        finally:
            with self._in_flight_lock:
                self.in_flight -= 1


class ModelVersion(InFlight):
    """One SavedModel version loaded in this process."""

    def __init__(self, model_name, version, path):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        super().__init__()
        self.model_name = model_name
        self.version = version
        self.path = path
        started = time.monotonic()
        self._loaded = tf.saved_model.load(path)
        self._functions = dict(self._loaded.signatures)
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
            proto.ParseFromString(f.read())
        self.signature_defs = dict(proto.meta_graphs[0].signature_def)
        self.input_specs = {name: _input_specs(sig) for name, sig in self.signature_defs.items()
                            if name in self._functions}
        self._flat = {name: _flat_inputs(f) for name, f in self._functions.items()}
        self._metadata = None
        self.load_seconds = time.monotonic() - started

    def specs(self, signature_name):
        specs = self.input_specs.get(signature_name)
        if specs is None:
            raise invalid_argument('Serving signature name: "%s" not found in signature def'
                                   % signature_name)
        return specs

    def predict(self, signature_name, arrays):
        """Runs a signature on NumPy inputs; returns {output name: ndarray}."""
        import tensorflow as tf
        function = self._functions.get(signature_name)
        if function is None:
            raise invalid_argument('Serving signature name: "%s" not found in signature def'
                                   % signature_name)
        try:
            flat = self._flat.get(signature_name)
            if flat is not None and _matches(arrays, flat):
                # What function(**tensors) does once it has bound and checked
                # the arguments against its signature, which _matches() has
                # just done: TF's check costs ~0.2 ms a call, a third of what
                # running the taxi model on one row costs. Anything unusual
                # takes the structured call below (and its errors).
                outputs = function._call_flat(  # pylint: disable=protected-access
                    [tf.constant(arrays[name]) for name, _, _ in flat],
                    function.captured_inputs)
            else:
                outputs = function(**{k: tf.constant(v) for k, v in arrays.items()})
        except tf.errors.OpError as e:
            code = _TF_CODES.get(e.error_code, 'UNKNOWN')
            raise ServingError(code, tf_error_message(e.message)) from None
        except (TypeError, ValueError) as e:
            # Raised when binding the arguments, i.e. by the inputs' dtype/shape.
            raise invalid_argument(str(e).split('\n')[0]) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def warm_up(self):
        """Calls each signature once, so the first client request is not slow.

        The first call of a loaded function builds its runtime state (hundreds
        of ms); a warm-up failure only means a signature needs real data (e.g.
        serialized tf.Examples), so it is logged, not raised.
        """
        for name, specs in self.input_specs.items():
            try:
                self.predict(name, _warm_up_inputs(specs))
            except ServingError as e:
                logger.debug('warm-up of %s v%d %s skipped: %s', self.model_name,
                             self.version, name, e.message)

    def metadata(self):
        """GetModelMetadata's `metadata` field: the SignatureDefMap as JSON."""
        if self._metadata is None:
            from tensorflow_serving.apis import get_model_metadata_pb2
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for name, signature in self.signature_defs.items():
                signature_map.signature_def[name].CopyFrom(signature)
            self._metadata = {'signature_def': _proto_dict(signature_map)}
        return self._metadata


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one model serves: an immutable snapshot of rollout.json + loaded versions."""
    model_name: str
    stable: int = None
    canary: int = None
    traffic: int = 0
    phase: str = 'empty'
    event_id: str = None
    versions: dict = dataclasses.field(default_factory=dict)

    @property
    def key(self):
        """What routing depends on; metric windows restart when it changes."""
        return (self.stable, self.canary, self.traffic)

    def role(self, version):
        if version == self.stable:
            return STABLE
        if version == self.canary:
            return CANARY
        return None

    def by_label(self, label):
        version = {STABLE: self.stable, CANARY: self.canary}.get(label)
        if version is None or version not in self.versions:
            raise invalid_argument('Unrecognized servable version label: %s' % label)
        return self.versions[version]

    def by_version(self, version):
        model = self.versions.get(version)
        if model is None:
            raise not_found('Servable not found for request: Specific(%s, %d)'
                            % (self.model_name, version))
        return model

    def describe(self):
        return {'stable': self.stable, 'canary': self.canary,
                'traffic': self.traffic if self.canary is not None else 0,
                'phase': self.phase, 'event_id': self.event_id}


class ServedModel:
    """One model under the serving root, following its rollout.json."""

    def __init__(self, serving_root, name, loader=ModelVersion, on_change=None):
        self.name = staging.check_model_name(name)
        self.model_dir = staging.model_dir(serving_root, name)
        self.state_path = locations.rollout_json_path(serving_root, self.name)
        self._loader = loader
        self._on_change = on_change
        self._plan = Plan(name)
        self._seen = None          # stat of the rollout.json last applied
        self._failed = None        # (stat, message) of the last failed apply
        self._loading = set()
        self._draining = []
        self._ended = set()
        self._lock = threading.Lock()  # one refresh at a time
        self.reloads = 0
        self.reload_errors = 0
        self.last_error = None

    @property
    def plan(self):
        return self._plan

    def _stat(self):
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        # rollout.json is replaced by rename, so the inode changes on every
        # write even when mtime granularity is coarse.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self):
        """Applies rollout.json if it changed; returns True if the plan changed.

        Never raises for a bad state file or an unloadable version: the current
        plan keeps serving and the error is kept in `last_error`.
        """
        with self._lock:
            stat = self._stat()
            if stat == self._seen:
                return False
            if stat is None and self._plan.versions:
                # Our tools only ever replace rollout.json; never stop serving
                # because it is briefly missing or was deleted by hand.
                return False
            if self._failed and self._failed[0] == stat:
                return False  # The same broken content: wait for a change.
            try:
                state = state_mod.load_state(self.state_path, self.name)
                plan = self._build_plan(state)
            except (RolloutError, ServingError, OSError) as e:
                # Cheap to re-check (a bad file, a version dir not there yet):
                # retry on the next poll.
                self._record_error(getattr(e, 'message', None) or str(e))
                return False
            except Exception as e:  # noqa: BLE001  a broken SavedModel raises anything
                # Loading is expensive: retry only once rollout.json changes.
                self._failed = (stat, None)
                self._record_error('cannot load a version listed in %s: %s'
                                   % (self.state_path, e))
                return False
            self._seen, self._failed, self.last_error = stat, None, None
            old, self._plan = self._plan, plan
            for version, model in old.versions.items():
                if version not in plan.versions:
                    self._draining.append(model)
            self.reloads += 1
        changed = old.key != plan.key
        if changed:
            logger.info('%s: now serving %s', self.name, plan.describe())
        if self._on_change is not None:
            self._on_change(self.name, old, plan)
        return changed

    def _record_error(self, message):
        if message != self.last_error:  # Log once per distinct problem.
            logger.error('%s: keeping the current versions: %s', self.name, message)
        self.last_error = message
        self.reload_errors += 1

    def _build_plan(self, state):
        # Check every directory before loading anything, so a missing one
        # does not make us reload the others on every poll.
        # A loader that does not read the directory (serving/upstream.py's
        # router: another server loads it) says so with needs_saved_model.
        needs_files = getattr(self._loader, 'needs_saved_model', True)
        for version in state.versions():
            path = os.path.join(self.model_dir, str(version))
            if (needs_files and version not in self._plan.versions
                    and not os.path.isfile(os.path.join(path, 'saved_model.pb'))):
                raise ServingError('NOT_FOUND', 'version %d of %s is listed in %s but %s holds '
                                   'no SavedModel' % (version, self.name, self.state_path, path))
        versions = {}
        for version in sorted(state.versions()):
            model = self._plan.versions.get(version)
            if model is None:
                path = os.path.join(self.model_dir, str(version))
                self._loading.add(version)
                try:
                    model = self._loader(self.name, version, path)
                    model.warm_up()
                finally:
                    self._loading.discard(version)
                logger.info('%s: loaded version %d in %.1f s', self.name, version,
                            model.load_seconds)
            versions[version] = model
        event = state.last_event or {}
        return Plan(self.name, state.stable_version, state.canary_version,
                    state.canary_traffic_percent, state.phase, event.get('id'), versions)

    def drain(self):
        """Forgets retired versions once no request uses them any more."""
        keep = []
        for model in self._draining:
            if model.in_flight:
                keep.append(model)
            else:
                self._ended.add(model.version)
                logger.info('%s: unloaded version %d', self.name, model.version)
        self._draining = keep

    def version_states(self):
        """{version: TF Serving ModelVersionStatus state} for every known version."""
        # tuple() copies in one step under the GIL: the watcher thread may be
        # changing these collections while a status request reads them.
        states = dict.fromkeys(tuple(self._ended), 'END')
        states.update((m.version, 'UNLOADING') for m in tuple(self._draining))
        states.update(dict.fromkeys(tuple(self._loading), 'LOADING'))
        states.update(dict.fromkeys(tuple(self._plan.versions), 'AVAILABLE'))
        return states


class ModelRegistry:
    """The served models and the thread that follows their rollout.json."""

    def __init__(self, serving_root, model_names=None, poll_seconds=1.0,
                 loader=ModelVersion, on_change=None):
        self.serving_root = os.path.abspath(serving_root)
        if model_names is None:
            model_names = discover_models(self.serving_root)
        self.models = {name: ServedModel(self.serving_root, name, loader, on_change)
                       for name in model_names}
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = None

    def get(self, name):
        model = self.models.get(name)
        if model is None:
            raise not_found('Servable not found for request: Latest(%s)' % name)
        return model

    def refresh_all(self):
        for model in self.models.values():
            model.refresh()
            model.drain()

    def start(self):
        """Loads what rollout.json says now, then follows it in a thread."""
        self.refresh_all()
        self._thread = threading.Thread(target=self._run, name='rollout-watcher', daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh_all()
            except Exception:  # noqa: BLE001  the watcher must outlive any bug
                logger.exception('rollout watcher failed; retrying')

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def discover_models(serving_root):
    """Model names under the serving root: directories holding a rollout.json."""
    try:
        names = sorted(os.listdir(serving_root))
    except FileNotFoundError:
        raise RolloutError('serving root %s does not exist: pass --serving-root (the folder '
                           'CanaryPusher stages into, e.g. workspace/serving)'
                           % serving_root) from None
    return [n for n in names if os.path.isfile(os.path.join(serving_root, n, 'rollout.json'))]
