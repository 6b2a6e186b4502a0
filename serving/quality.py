"""Live quality: joins ground-truth labels with the predictions this server made.

The server remembers, for each captured request it answered (a bounded,
most-recent-first store), the rows' raw features, the version and role that
answered, the probabilities it returned and the metrics window it was served
in. When `POST :feedback` accepts a first label for one of those rows, the
label is derived by the serving version's own transform signature (raw
tf.Example with the label column -> transformed features, read `label_key`):
the same transform training used, never a copy of its rule. Then the pair
(probability, label) goes into that version's rollout.live_quality.LiveQuality
(serving/metrics.py), once per row (first label wins, as in serving/labels.py).

Not counted live (still accepted and logged): labels for rows this server did
not answer, answered before a restart, or that fell out of the store; rows
whose version was unloaded since. Bulk labels (`capture label`) appended to
the log while the server runs are followed every snapshot interval; rows of requests the capture did not
sample (capture rate < 1: live quality covers the captured sample).
"""
import collections
import logging
import os
import threading

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 200000   # rows remembered for the join (the oldest are forgotten)


class _Served:
    __slots__ = ('model', 'version', 'role', 'window', 'rows', 'predictions')

    def __init__(self, model, version, role, window, rows, predictions):
        self.model, self.version, self.role, self.window = model, version, role, window
        self.rows, self.predictions = rows, predictions


def _feature(example, name, value):
    if value is None:
        return
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return
        value = value.reshape(-1)[0]
    feature = example.features.feature[name]
    if isinstance(value, (bytes, np.bytes_)):
        feature.bytes_list.value.append(bytes(value))
    elif isinstance(value, str):
        feature.bytes_list.value.append(value.encode('utf-8'))
    elif isinstance(value, (bool, np.bool_, int, np.integer)):
        feature.int64_list.value.append(int(value))
    else:
        feature.float_list.value.append(float(value))


_PLACEHOLDERS = {1: 0.0, 7: b'', 9: 0}   # DT_FLOAT, DT_STRING, DT_INT64


def required_features(function):
    """{name: placeholder} of the dense features a signature's tf.Example parse
    requires (no default), read from its own graph: a served row may lack some
    (the model's serving signatures do not parse them, e.g. the taxi model's
    trip_start_timestamp) and the parse would refuse the whole batch."""
    from tensorflow.python.framework import tensor_util
    graph = function.graph.as_graph_def()
    required = {}
    for body in [list(graph.node)] + [list(f.node_def) for f in graph.library.function]:
        by_name = {n.name: n for n in body}

        def const(ref, by_name=by_name):
            node = by_name.get(ref.split(':')[0].lstrip('^'))
            if node is None or node.op != 'Const':
                return None
            return tensor_util.MakeNdarray(node.attr['value'].tensor)
        for node in body:
            if node.op != 'ParseExampleV2':
                continue
            keys = const(node.input[3])
            dtypes = list(node.attr['Tdense'].list.type)
            if keys is None:
                continue
            for key, dtype, ref in zip(keys.reshape(-1), dtypes,
                                       node.input[5:5 + len(dtypes)]):
                default = const(ref)
                if default is not None and default.size == 0 and dtype in _PLACEHOLDERS:
                    name = key.decode('utf-8') if isinstance(key, bytes) else str(key)
                    required[name] = _PLACEHOLDERS[dtype]
    return required


def serialize_example(features, label_column, label_value, required=None):
    """A tf.Example of a row's raw features plus the label column's value;
    `required` features the row lacks get their placeholder."""
    from tensorflow.core.example import example_pb2
    example = example_pb2.Example()
    for name, value in features.items():
        if name != label_column:
            _feature(example, name, value)
    _feature(example, label_column, label_value)
    for name, placeholder in (required or {}).items():
        if name not in example.features.feature:
            _feature(example, name, placeholder)
    return example.SerializeToString()


class LiveJoin:
    """The served-rows store and the label derivation (thread-safe)."""

    def __init__(self, metrics, registry, label_key, transform_signature,
                 max_rows=DEFAULT_MAX_ROWS):
        self.metrics = metrics
        self.registry = registry
        self.label_key = label_key
        self.transform_signature = transform_signature
        self.max_rows = max_rows
        self._served = collections.OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self._warned = set()
        self._log_offset = None
        self._required = {}   # (model, version) -> required_features of its signature

    def served(self, request_id, model, version, role, rows, predictions):
        """Remembers one captured request; `rows` is capture.feature_rows' callable."""
        window = self.metrics.current_window(model)
        entry = _Served(model, version, role, window, rows, list(predictions))
        with self._lock:
            old = self._served.pop(request_id, None)
            if old is not None:
                self._rows -= len(old.predictions)
            self._served[request_id] = entry
            self._rows += len(entry.predictions)
            while self._rows > self.max_rows and self._served:
                _, dropped = self._served.popitem(last=False)
                self._rows -= len(dropped.predictions)

    def labeled(self, model, labels, label_column):
        """Adds the first labels of one feedback batch to live quality; returns rows counted."""
        groups = {}
        with self._lock:
            for label in labels:
                entry = self._served.get(label.request_id)
                if (entry is None or (model is not None and entry.model != model)
                        or label.row >= len(entry.predictions)):
                    continue
                groups.setdefault((entry.model, entry.version, entry.role, id(entry.window)),
                                  []).append((entry, label))
        counted = 0
        for (model, version, role, _), items in groups.items():
            derived = self._derive(model, version, items, label_column)
            if derived is None:
                continue
            pairs = [(entry.predictions[label.row], y)
                     for (entry, label), y in zip(items, derived)]
            self.metrics.labeled(model, version, role, items[0][0].window, pairs)
            counted += len(pairs)
        return counted

    def follow(self, log_path, label_column):
        """Counts first labels other writers (`capture label`) appended to the log
        since the last call (the first call starts at its end: older lines are
        for rows served before this server started). Returns rows counted."""
        from serving import labels as labels_lib
        try:
            size = os.path.getsize(log_path)
        except OSError:
            size = 0
        if self._log_offset is None or size < self._log_offset:
            self._log_offset = size
            return 0
        if size == self._log_offset:
            return 0
        with open(log_path, 'rb') as f:
            f.seek(self._log_offset)
            data = f.read(size - self._log_offset)
        entries, end = labels_lib.complete_lines(data)   # a line being written: next time
        self._log_offset += end
        found = []
        for entry in entries:
            try:
                if entry.get(labels_lib.F_SOURCE) == 'feedback' or entry.get(
                        labels_lib.F_DUPLICATE):
                    continue   # ours are counted as they come; duplicates never
                found.append(labels_lib.Label(entry[labels_lib.REQUEST_ID],
                                              int(entry[labels_lib.ROW]),
                                              entry[labels_lib.F_VALUE]))
            except (ValueError, KeyError, TypeError):
                continue
        return self.labeled(None, found, label_column) if found else 0

    def _derive(self, model, version, items, label_column):
        """The labels as `version`'s transform signature computes them (one call per batch)."""
        try:
            target = self.registry.get(model).plan.versions.get(version)
        except Exception:  # noqa: BLE001  the model went away
            target = None
        if target is None:
            return None
        key = (model, version)
        required = self._required.get(key)
        if required is None:
            try:
                required = required_features(
                    getattr(target, '_functions', {})[self.transform_signature])
            except Exception:  # noqa: BLE001  no such signature: reported below
                required = {}
            self._required[key] = required
        cache = {}
        serialized = []
        for entry, label in items:
            rows = cache.get(id(entry))
            if rows is None:
                rows = cache[id(entry)] = entry.rows()
            if label.row >= len(rows):
                return None
            serialized.append(serialize_example(rows[label.row], label_column, label.value,
                                                required))
        try:
            with target.use():
                specs = target.specs(self.transform_signature)
                (alias,) = specs
                outputs = target.predict(self.transform_signature,
                                         {alias: np.array(serialized, dtype=object)})
            values = np.asarray(outputs[self.label_key]).reshape(len(serialized), -1)[:, 0]
        except Exception as e:  # noqa: BLE001  never fails the feedback call
            key = (model, version)
            if key not in self._warned:
                self._warned.add(key)
                logger.warning('live quality: cannot derive labels with %s v%s signature %s '
                               '(key %s): %s; its labels are logged but not counted live',
                               model, version, self.transform_signature, self.label_key, e)
            return None
        return [int(float(v) >= 0.5) for v in values]
