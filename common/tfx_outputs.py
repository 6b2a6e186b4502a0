"""The one reader of each TFX output file more than one package reads.

* TFMA's metrics (Evaluator's ModelEvaluation): the CanaryPusher snapshots
  them into the rollout history, the run summary prints them, lineage shows
  them per slice.
* TFDV's anomalies (ExampleValidator's ExampleAnomalies): the ValidationGate
  blocks on them, lineage lists them.

Neither imports TensorFlow: TFDV's protos are in the light
`tensorflow_metadata` package, and TFMA's message classes are built from the
serialized descriptors inside its generated *_pb2 modules (`tfma_class`),
because importing TFMA runs its package __init__, which imports TensorFlow
(~8 s before `tfx-canary lineage` could print a line). Paths may be local or
object-store URIs (common/storage.py).
"""
import ast
import dataclasses
import importlib.util
import os
import struct
from typing import Dict, List, Optional, Tuple

from common import storage

ANOMALIES_FILE = 'SchemaDiff.pb'   # What ExampleValidator writes per split.
SPLIT_PREFIX = 'Split-'            # TFX's per-split folder: <uri>/Split-<name>/.
METRICS_PATTERN = 'metrics*'       # TFMA's metrics TFRecord file(s) in an evaluation.
CANDIDATE, BASELINE = 'candidate', 'baseline'   # TFX's model names in a comparison.

# TFMA proto files, in dependency order.
_TFMA_PROTO_MODULES = ('config', 'metrics_for_slice', 'validation_result')


# ---------------------------------------------------------------- TFRecords, TFMA classes

def tfrecords(path):
    """Yields the records of an uncompressed TFRecord file (what TFMA writes).

    Format: uint64 length, uint32 CRC of the length, data, uint32 CRC of the
    data. CRCs are not checked (no crc32c in the standard library); a
    truncated file ends the iteration with ValueError.
    """
    with storage.open_binary(path) as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f'{path}: truncated TFRecord header')
            (length,) = struct.unpack('<Q', header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                raise ValueError(f'{path}: truncated TFRecord')
            yield data


def _register_tfma_descriptors(pool):
    """Adds TFMA's proto descriptors to `pool` from its *_pb2 sources.

    The serialized descriptor is the one bytes literal passed to
    AddSerializedFile in each generated module, so it is read with `ast`
    instead of executing the module. Adding the same file again later (when
    TFMA itself is imported) is a no-op for protobuf.
    """
    from google.protobuf import wrappers_pb2  # noqa: F401  (a dependency of config.proto)

    spec = importlib.util.find_spec('tensorflow_model_analysis')
    if spec is None or not spec.origin:
        raise ImportError('tensorflow_model_analysis is not installed')
    proto_dir = os.path.join(os.path.dirname(spec.origin), 'proto')
    for module in _TFMA_PROTO_MODULES:
        try:
            pool.FindFileByName(f'tensorflow_model_analysis/proto/{module}.proto')
            continue
        except KeyError:
            pass
        with open(os.path.join(proto_dir, module + '_pb2.py'), encoding='utf-8') as f:
            tree = ast.parse(f.read())
        serialized = next(
            (node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call)
             and getattr(node.func, 'attr', '') == 'AddSerializedFile'
             and node.args and isinstance(node.args[0], ast.Constant)), None)
        if serialized is None:
            raise ImportError(f'no serialized descriptor in {module}_pb2.py')
        pool.AddSerializedFile(serialized)


def tfma_class(full_name):
    """The message class for a TFMA proto, e.g. 'tensorflow_model_analysis.EvalConfig'."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        try:
            _register_tfma_descriptors(pool)
        except (ImportError, OSError, SyntaxError, TypeError):
            # An unexpected TFMA layout: the slow but sure way.
            import tensorflow_model_analysis  # noqa: F401
        descriptor = pool.FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


# ---------------------------------------------------------------- TFMA metrics

def slice_value(single_key):
    """The value of one TFMA SingleSliceKey (bytes decoded)."""
    kind = single_key.WhichOneof('kind')
    value = getattr(single_key, kind) if kind else None
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def slice_name(key):
    """'overall' or 'feature=value[, feature=value]' for a ((column, value), ...) key."""
    if not key:
        return 'overall'
    return ', '.join(f'{column}={value}' for column, value in key)


@dataclasses.dataclass(frozen=True)
class SliceMetrics:
    """One slice's metrics: the candidate's, the baseline's and their diffs.

    A single-model evaluation (nothing served yet) has only `candidate`.
    """
    slice: str                                  # 'overall' or 'trip_start_hour=8'
    key: Tuple[Tuple[str, object], ...]         # () for overall
    candidate: Dict[str, float]
    baseline: Dict[str, float]
    diff: Dict[str, float]


def _slice_sort_key(row):
    # Overall first, then by feature, numeric values in numeric order.
    return (len(row.key),
            [(c, isinstance(v, str), v if not isinstance(v, str) else 0, str(v))
             for c, v in row.key])


def _add_metrics(groups, priority, metrics_for_slice):
    for kv in metrics_for_slice.metric_keys_and_values:
        if kv.key.HasField('sub_key') or kv.key.HasField('aggregation_type'):
            continue
        if not kv.value.HasField('double_value'):
            continue
        group = 'diff' if kv.key.is_diff else (
            BASELINE if kv.key.model_name == BASELINE else CANDIDATE)
        # A metric both Keras-compiled and TFMA-computed: TFMA's (the one the
        # thresholds apply to, with example_weighted set) wins.
        rank = 1 if kv.key.HasField('example_weighted') else 0
        slot = (group, kv.key.name)
        if priority.get(slot, -1) <= rank:
            priority[slot] = rank
            groups[group][kv.key.name] = kv.value.double_value.value


def slice_metrics(evaluation_uri) -> Optional[List[SliceMetrics]]:
    """Metrics per slice of an Evaluator output, overall first; None without metrics files."""
    if not evaluation_uri or not storage.exists(evaluation_uri):
        return None
    paths = storage.glob(os.path.join(evaluation_uri, METRICS_PATTERN))
    if not paths:
        return None
    message = tfma_class('tensorflow_model_analysis.MetricsForSlice')
    groups, priorities = {}, {}
    for path in paths:
        for record in tfrecords(path):
            metrics_for_slice = message.FromString(record)
            if metrics_for_slice.HasField('cross_slice_key'):
                continue
            key = tuple((k.column, slice_value(k))
                        for k in metrics_for_slice.slice_key.single_slice_keys)
            _add_metrics(groups.setdefault(key, {CANDIDATE: {}, BASELINE: {}, 'diff': {}}),
                         priorities.setdefault(key, {}), metrics_for_slice)
    rows = [SliceMetrics(slice=slice_name(key), key=key, candidate=g[CANDIDATE],
                         baseline=g[BASELINE], diff=g['diff']) for key, g in groups.items()]
    return sorted(rows, key=_slice_sort_key)


def overall_metrics(evaluation_uri) -> Dict[str, Dict[str, float]]:
    """{'candidate': {...}, 'baseline': {...}}: the overall slice's metrics per model.

    'baseline' is present only when the Evaluator compared against one; {}
    when the evaluation has no metrics files.
    """
    rows = slice_metrics(evaluation_uri) or []
    overall = next((row for row in rows if not row.key), None)
    if overall is None:
        return {}
    result = {CANDIDATE: dict(overall.candidate)}
    if overall.baseline:
        result[BASELINE] = dict(overall.baseline)
    return result


# ---------------------------------------------------------------- TFDV anomalies

def read_anomalies(split_dir):
    """The Anomalies proto ExampleValidator wrote for one split, or None if it has none."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    path = os.path.join(split_dir, ANOMALIES_FILE)
    if not storage.isfile(path):
        return None
    return anomalies_pb2.Anomalies.FromString(storage.read_bytes(path))


def anomalies_by_split(anomalies_uri):
    """{split: Anomalies} of the Split-* folders of an ExampleAnomalies artifact that
    hold anomalies; None when the artifact has no split folder at all."""
    if not anomalies_uri or not storage.exists(anomalies_uri):
        return None
    split_dirs = storage.glob(os.path.join(anomalies_uri, SPLIT_PREFIX + '*'))
    if not split_dirs:
        return None
    result = {}
    for split_dir in split_dirs:
        found = read_anomalies(split_dir)
        if found is not None:
            result[os.path.basename(split_dir.rstrip('/'))[len(SPLIT_PREFIX):]] = found
    return result


# ---------------------------------------------------------------- TFDV drift

# Anomaly types meaning "too far from the previous statistics" (the schema's
# drift_comparators), by name: no proto import needed to define them.
DRIFT_ANOMALY_TYPES = ('COMPARATOR_L_INFTY_HIGH', 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH',
                       'COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH')
_MEASURE_NAMES = {'L_INFTY': 'L-infinity distance',
                  'JENSEN_SHANNON_DIVERGENCE': 'Jensen-Shannon divergence',
                  'NORMALIZED_ABSOLUTE_DIFFERENCE': 'normalized absolute difference'}


@dataclasses.dataclass(frozen=True)
class DriftMeasurement:
    """One feature's distance from the previous statistics, as TFDV measured it."""
    feature: str
    measure: str        # e.g. 'Jensen-Shannon divergence'
    distance: float
    threshold: float    # the schema's drift_comparator threshold
    drifted: bool       # TFDV flagged it (distance above the threshold)


def drift_measurements(anomalies) -> List[DriftMeasurement]:
    """Every drift distance in a TFDV Anomalies proto (drift_skew_info), by feature."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    info_type = anomalies_pb2.AnomalyInfo.Type
    drift_types = {info_type.Value(name) for name in DRIFT_ANOMALY_TYPES}
    drifted = {name for name, info in anomalies.anomaly_info.items()
               if any(r.type in drift_types for r in info.reason)}
    measure_type = anomalies_pb2.DriftSkewInfo.Measurement.Type
    found = []
    for info in anomalies.drift_skew_info:
        name = '.'.join(info.path.step)
        for m in info.drift_measurements:
            found.append(DriftMeasurement(
                feature=name, measure=_MEASURE_NAMES.get(measure_type.Name(m.type), 'distance'),
                distance=float(m.value), threshold=float(m.threshold), drifted=name in drifted))
    return sorted(found, key=lambda m: m.feature)
