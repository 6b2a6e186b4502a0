"""Staging layout for TF Serving: `<serving_root>/<model_name>/<version>/`.

Version directories are named by integers and hold a SavedModel
(`saved_model.pb`, `variables/`, ...), exactly what TF Serving's file-system
source watches. A version directory appears atomically (rename of a fully
written, validated, fsynced hidden temp dir) and disappears atomically
(rename to a hidden name, then delete), so TF Serving never sees half a model.
Hidden names start with "." and are not all digits, so TF Serving ignores them.
"""

import hashlib
import os
import re
import shutil

from common import storage
from rollout import fsutil
from rollout import kserve
from rollout import training_data as training_data_lib
from rollout.errors import RolloutError

# How many of the newest versions stay on disk (PipelineConfig.keep_versions);
# stable and canary are kept on top, however old, so 1 is a safe minimum.
DEFAULT_KEEP_VERSIONS = 5
MIN_KEEP_VERSIONS = 1

STAGING_PREFIX = ".staging-"
DELETING_PREFIX = fsutil.DELETING_PREFIX

# What identifies a SavedModel export: TF >= 2.9 writes fingerprint.pb
# (checksums of graph, signatures, variables), identical for identical
# exports; saved_model.pb is the fallback for older exports.
FINGERPRINT_FILE = "fingerprint.pb"
IDENTITY_FILES = (FINGERPRINT_FILE, "saved_model.pb")

_VERSION_RE = re.compile(r"[0-9]+")
_MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_model_name(model_name):
    """Raise RolloutError unless `model_name` is safe as one path component."""
    if not isinstance(model_name, str) or not _MODEL_NAME_RE.fullmatch(
            model_name):
        raise RolloutError(
            f"model name {model_name!r} is not valid: use letters, digits, "
            f"'.', '_' or '-', starting with a letter or digit (e.g. 'taxi')")
    return model_name


def model_dir(serving_root, model_name):
    """Return `<serving_root>/<model_name>`."""
    return os.path.join(serving_root, check_model_name(model_name))


def version_dir(serving_root, model_name, version):
    """Return `<serving_root>/<model_name>/<version>`."""
    return os.path.join(model_dir(serving_root, model_name), str(version))


def list_versions(serving_root, model_name):
    """Return the staged versions, ascending; [] if the model dir is absent."""
    return sorted(
        int(entry.name) for entry in fsutil.entries(model_dir(serving_root, model_name))
        if _VERSION_RE.fullmatch(entry.name) and entry.is_dir())


def _before_rename(temp_dir, final_dir):
    """Test hook: runs after validation, right before the publishing rename.

    Tests monkeypatch it to raise, simulating a crash at the worst moment.
    """


def stage_model(src_dir, serving_root, model_name, validate=None,
                last_version=0, training_data=None):
    """Copy the SavedModel in `src_dir` in as the next version; return it.

    The caller MUST hold the model lock (RolloutController does): the version
    number is picked from the directory listing, so two unlocked callers
    could pick the same number. The new version is
    `max(existing versions, last_version) + 1`; passing the highest version
    ever staged (RolloutState.last_version) keeps numbers growing even after
    pruning, so a number is never reused for a different model.

    `validate(path)` is called on the copy, not on `src_dir`, so it checks
    the exact bytes that will be served; it should raise on a bad model. On
    any failure the temp copy is removed and nothing visible changes.

    `training_data` (a training_data.TrainingData), if given, is published
    beside the version just before it, so a visible version has it.
    """
    src_dir = os.fspath(src_dir)
    if not os.path.isdir(src_dir):
        raise RolloutError(
            f"model directory {src_dir} does not exist: pass the SavedModel "
            f"export directory (the one containing saved_model.pb)")
    if not (os.path.isfile(os.path.join(src_dir, "saved_model.pb"))
            or os.path.isfile(os.path.join(src_dir, "saved_model.pbtxt"))):
        raise RolloutError(
            f"{src_dir} has no saved_model.pb: pass the SavedModel export "
            f"directory itself, e.g. the Trainer's Format-Serving directory")

    parent = model_dir(serving_root, model_name)
    fsutil.makedirs_durable(parent)
    version = max(list_versions(serving_root, model_name) + [last_version]) + 1
    final_dir = os.path.join(parent, str(version))
    temp_dir = os.path.join(parent, f"{STAGING_PREFIX}{version}-{os.getpid()}")
    # A leftover with our name can only come from a crashed process that had
    # the same pid; it is garbage.
    shutil.rmtree(temp_dir, ignore_errors=True)
    try:
        fsutil.copy_tree_durable(src_dir, temp_dir)
        if validate is not None:
            try:
                validate(temp_dir)
            except RolloutError:
                raise
            except Exception as exc:
                raise RolloutError(
                    f"the model in {src_dir} failed validation: {exc}: fix "
                    f"the export and push again; nothing was staged") from exc
        if training_data is not None:
            training_data_lib.write(serving_root, model_name, version,
                                    training_data)
        _before_rename(temp_dir, final_dir)
        if os.path.lexists(final_dir):
            # Only possible if someone bypassed the lock.
            raise RolloutError(
                f"{final_dir} appeared while staging: another process is "
                f"staging {model_name} without the lock; retry")
        os.rename(temp_dir, final_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        if training_data is not None:
            training_data_lib.remove(serving_root, model_name, [version])
        raise
    fsutil.fsync_dir(parent)
    return version


def clean_stale_temp_dirs(serving_root, model_name):
    """Remove leftovers of crashed stage/prune runs; return removed paths.

    These are hidden staging and deleting dirs, and the temp files of
    atomic writes (rollout.json, its backup, the KServe manifest) whose
    writer was killed before its rename: everything written in the model
    dir is written under the model lock.

    Call it only while holding the model lock: outside the lock, another
    process's in-flight staging dir would look stale too.
    """
    directory = model_dir(serving_root, model_name)
    removed = []
    for entry in fsutil.entries(directory):
        if entry.name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    if removed:
        fsutil.fsync_dir(directory)
    removed += fsutil.remove_stale_temp_files(directory)
    removed += fsutil.remove_stale_temp_files(
        os.path.join(directory, kserve.MANIFEST_DIR))
    removed += training_data_lib.clean_stale(serving_root, model_name)
    return sorted(removed)


def check_keep(keep):
    """Return `keep` if it is an int >= MIN_KEEP_VERSIONS, else raise RolloutError."""
    if (isinstance(keep, bool) or not isinstance(keep, int)
            or keep < MIN_KEEP_VERSIONS):
        raise RolloutError(
            f"keep must be a whole number >= {MIN_KEEP_VERSIONS} (how many "
            f"newest versions to keep on disk), got {keep!r}")
    return keep


def _hide_versions(serving_root, model_name, versions):
    """Rename versions to hidden names, fsync, then delete them.

    Renaming first is atomic, so TF Serving and other readers never see a
    half-deleted version directory; after a crash only hidden garbage remains
    for clean_stale_temp_dirs. Returns the versions actually removed.
    """
    directory = model_dir(serving_root, model_name)
    removed = fsutil.remove_dirs([os.path.join(directory, str(v)) for v in versions])
    gone = [int(os.path.basename(path)) for path in removed]
    # After the version itself: a visible version always has its data.
    training_data_lib.remove(serving_root, model_name, gone)
    return gone


def remove_version(serving_root, model_name, version):
    """Atomically withdraw one version directory; caller holds the lock."""
    return bool(_hide_versions(serving_root, model_name, [version]))


def prune_versions(serving_root, model_name, keep, protected):
    """Delete versions older than the `keep` newest, sparing `protected`.

    Call it while holding the model lock; `protected` should hold the stable
    and canary versions. Returns the removed versions, oldest first.
    """
    check_keep(keep)
    protected = {v for v in protected if v is not None}
    versions = list_versions(serving_root, model_name)
    victims = [v for v in versions[:-keep] if v not in protected]
    return _hide_versions(serving_root, model_name, victims)


def saved_model_fingerprint(model_dir):
    """`<identity file>:<sha256>` of the SavedModel in `model_dir`, or None without one.

    Equal fingerprints mean the same export (a re-blessed unchanged model, the
    baseline a cache entry was made with). `model_dir` may be a local path or
    a fileio URI (a gs:// serving root).
    """
    for name in IDENTITY_FILES:
        path = os.path.join(os.fspath(model_dir), name)
        if storage.isfile(path):
            data = storage.read_bytes(path)
            if name == FINGERPRINT_FILE:
                data = _model_identity(data)
            return f"{name}:{hashlib.sha256(data).hexdigest()}"
    return None


def _model_identity(fingerprint_bytes):
    """What identifies the model in TF's FingerprintDef: the graph program, the
    signatures, the object graph and the checkpoint (the weights).

    Not `saved_model_checksum`: it hashes saved_model.pb's bytes, which differ
    between two exports of the same program and weights (TF serializes graph
    nodes in varying order), so an unchanged model re-exported by a re-run
    would look new and be staged again as a duplicate canary. Measured on TF
    2.16: graph_def_program_hash does not cover tf.function bodies (a changed
    constant inside the serving function leaves it as it was), so a code change
    that keeps weights and signatures bit-equal is not told apart; a retrain
    always moves the weights. TensorFlow is
    imported here only: the fingerprints are taken in pipeline steps, which
    have it loaded already.
    """
    from tensorflow.core.protobuf import fingerprint_pb2  # pylint: disable=import-outside-toplevel

    fingerprint = fingerprint_pb2.FingerprintDef.FromString(fingerprint_bytes)
    return b"%d:%d:%d:%d" % (fingerprint.graph_def_program_hash, fingerprint.signature_def_hash,
                             fingerprint.saved_object_graph_hash, fingerprint.checkpoint_hash)


# Two exports whose every weight agrees to this tolerance are one model: a
# re-run on the same data, code and settings retrains it, and float sums
# taken in another order (thread scheduling) move weights by round-off only.
# A real retrain moves them by orders of magnitude more.
WEIGHTS_RTOL = 1e-4
WEIGHTS_ATOL = 1e-6


def same_model(dir_a, dir_b):
    """True when the SavedModels in `dir_a` and `dir_b` are the same model:
    equal fingerprints, or the same signatures and object graph, the same
    graph up to float constants, and the same variables, with every float
    (constants and weights) equal up to round-off (WEIGHTS_RTOL/ATOL).

    Constants matter as much as weights: Transform's analyzers (means,
    variances, bucket boundaries) are baked into the serving graph as
    constants, and Beam may sum them in another order on a re-run (measured
    on CI: a z-score mean 24.4449348 vs 24.4449368, weights bit-equal).
    Local paths or fileio URIs; False if either has no export.
    """
    a, b = saved_model_fingerprint(dir_a), saved_model_fingerprint(dir_b)
    if a is None or b is None:
        return False
    if a == b:
        return True
    programs = [_program_identity(d) for d in (dir_a, dir_b)]
    if None in programs or programs[0][1:] != programs[1][1:]:
        return False
    return ((programs[0][0] == programs[1][0] or _graphs_close(dir_a, dir_b))
            and _weights_close(dir_a, dir_b))


def _program_identity(model_dir):
    """(graph, signatures, object graph) hashes from fingerprint.pb, or None."""
    path = os.path.join(os.fspath(model_dir), FINGERPRINT_FILE)
    if not storage.isfile(path):
        return None
    from tensorflow.core.protobuf import fingerprint_pb2  # pylint: disable=import-outside-toplevel

    fingerprint = fingerprint_pb2.FingerprintDef.FromString(storage.read_bytes(path))
    return (fingerprint.graph_def_program_hash, fingerprint.signature_def_hash,
            fingerprint.saved_object_graph_hash)


def _graphs_close(dir_a, dir_b):
    """The two exports' graphs have the same nodes, ops, inputs and attributes,
    float constants compared within WEIGHTS_RTOL/ATOL, everything else exactly."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel

    graphs = []
    for model_dir in (dir_a, dir_b):
        proto = saved_model_pb2.SavedModel.FromString(
            storage.read_bytes(os.path.join(os.fspath(model_dir), "saved_model.pb")))
        graphs.append({node.name: node for node in proto.meta_graphs[0].graph_def.node})
    if graphs[0].keys() != graphs[1].keys():
        return False
    return all(_nodes_close(graphs[0][name], graphs[1][name]) for name in graphs[0])


def _nodes_close(x, y):
    if x == y:
        return True
    if (x.op, list(x.input), x.device) != (y.op, list(y.input), y.device) or (
            x.attr.keys() != y.attr.keys()):
        return False
    for key in x.attr:
        a, b = x.attr[key], y.attr[key]
        if a == b:
            continue
        if a.HasField("tensor") and b.HasField("tensor"):
            if not _tensors_close(a.tensor, b.tensor):
                return False
        elif not (a.HasField("func") and b.HasField("func") and (
                _FUNCTION_UID_RE.sub("", a.func.name) == _FUNCTION_UID_RE.sub("", b.func.name))
                and a.func.attr == b.func.attr):
            return False
    return True


# Traced functions are named with a per-process counter (__inference_serve_26):
# the same program traced again gets another number (TF's own fingerprint
# strips it the same way).
_FUNCTION_UID_RE = re.compile(r"_\d+$")


def _tensors_close(a, b):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    x, y = tf.make_ndarray(a), tf.make_ndarray(b)
    if x.dtype != y.dtype or x.shape != y.shape or not np.issubdtype(x.dtype, np.floating):
        return False
    return bool(np.allclose(x, y, rtol=WEIGHTS_RTOL, atol=WEIGHTS_ATOL))


def _weights_close(dir_a, dir_b):
    """The two exports' checkpoints hold the same variables, numerically equal
    within WEIGHTS_RTOL/ATOL (non-float values exactly equal)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    readers = [tf.train.load_checkpoint(os.path.join(os.fspath(d), "variables", "variables"))
               for d in (dir_a, dir_b)]
    shapes = [r.get_variable_to_shape_map() for r in readers]
    if shapes[0] != shapes[1]:
        return False
    for name in shapes[0]:
        x, y = (np.asarray(r.get_tensor(name)) for r in readers)
        if x.dtype != y.dtype:
            return False
        if np.issubdtype(x.dtype, np.floating):
            if not np.allclose(x, y, rtol=WEIGHTS_RTOL, atol=WEIGHTS_ATOL):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def validate_saved_model(path, required_signatures=("serving_default",)):
    """Load the SavedModel at `path`; raise RolloutError if it is unusable.

    TensorFlow is imported here, not at module level, so the CLI (which never
    loads models) starts fast.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    try:
        loaded = tf.saved_model.load(os.fspath(path))
    except Exception as exc:
        raise RolloutError(
            f"{path} is not a loadable SavedModel ({type(exc).__name__}: "
            f"{exc}): check the Trainer's export") from exc
    available = set(getattr(loaded, "signatures", {}).keys())
    missing = sorted(set(required_signatures) - available)
    if missing:
        raise RolloutError(
            f"SavedModel {path} is missing signature(s) "
            f"{', '.join(missing)} (it has: "
            f"{', '.join(sorted(available)) or 'none'}): export them in the "
            f"Trainer's run_fn via model.save(..., signatures={{...}})")
