"""Ground truth that arrives after the prediction: the label log and its checks.

    <capture root>/labels.jsonl       one JSON line per label received, append-only

A label names a captured row by (request id, row index in that request) and
gives the value of the schema's label column (the feature the schema keeps
out of the SERVING environment: `tips` for the taxi model), typed as in the
training CSV. Labels come from `POST /v1/models/NAME:feedback` on a running
`serve`, or in bulk from `tfx-canary capture label --labels FILE.csv`; both
append here, and `capture export` joins them with the captured rows.

Rules (decided here, documented in docs/serving.md):

* Durability: a batch of labels is written with one write() under a file lock
  and fsynced before the API answers or the command exits, so anything
  acknowledged survives a crash (kill -9 included). A torn last line left by a
  crash mid-write was never acknowledged: it is cut before the next append
  and skipped by readers.
* Duplicates: the first label for a (request id, row) wins. Later ones are
  still appended (flagged) for audit, counted, and never used.
* Unknown ids: a label for a row this server (or the capture on disk) does not
  know is kept too, and counted as unknown: it may be for a row still in
  another writer's queue, and export reports the ones that never matched.
* Early labels: a row still in an unpublished (hidden temp) capture part is
  known to the server that captured it, so its label is accepted, and export
  joins it once the part is published.

A whole batch is checked before anything is written: one bad item refuses
the batch (400 from the API, exit 2 from the command), nothing half-written.
"""
import csv
import dataclasses
import json
import math
import os
import re
import threading
import time

from common.errors import TfxCanaryError
from rollout import fsutil

LABEL_LOG = 'labels.jsonl'
_LOCK = '.labels.lock'
REQUEST_ID, ROW = 'request_id', 'row'
# A request id: what a client may send in X-Request-Id or `request_id`.
REQUEST_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}$')
# The field names of a log line.
F_MODEL, F_VALUE, F_COLUMN, F_SOURCE, F_AT, F_DUPLICATE, F_KNOWN = (
    'model', 'value', 'column', 'source', 'received_at', 'duplicate', 'known')


class LabelError(TfxCanaryError):
    """A label (or a batch of them) that does not fit the schema's label column."""


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The label column as the training CSV has it: name, type and domain."""
    name: str
    kind: str                      # 'FLOAT', 'INT' or 'BYTES' (schema_pb2.FeatureType)
    minimum: float = None
    maximum: float = None

    def from_json(self, value, where):
        """The JSON `value` as this column's type, or LabelError naming `where`."""
        if self.kind == 'BYTES':
            if not isinstance(value, str):
                raise LabelError('%s: %s must be a string, got %s' % (where, self.name,
                                                                      json.dumps(value)))
            return value
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (self.kind == 'INT' and not float(value).is_integer()):
            raise LabelError('%s: %s must be %s (as in the training CSV), got %s'
                             % (where, self.name, 'an integer' if self.kind == 'INT'
                                else 'a number', json.dumps(value)))
        return self.check(int(value) if self.kind == 'INT' else float(value), where)

    def from_text(self, text, where):
        """A CSV cell as this column's type, or LabelError naming `where`."""
        if self.kind == 'BYTES':
            return text
        try:
            value = int(text) if self.kind == 'INT' else float(text)
        except ValueError:
            raise LabelError('%s: %s must be %s (as in the training CSV), got %r'
                             % (where, self.name, 'an integer' if self.kind == 'INT'
                                else 'a number', text)) from None
        return self.check(value, where)

    def check(self, value, where):
        if self.kind != 'BYTES':
            if not math.isfinite(value):
                raise LabelError('%s: %s must be finite, got %r' % (where, self.name, value))
            if self.minimum is not None and value < self.minimum:
                raise LabelError('%s: %s is %r, below the schema\'s minimum %r'
                                 % (where, self.name, value, self.minimum))
            if self.maximum is not None and value > self.maximum:
                raise LabelError('%s: %s is %r, above the schema\'s maximum %r'
                                 % (where, self.name, value, self.maximum))
        return value


def label_spec_from_schema(schema_path):
    """The LabelSpec of the one feature a schema keeps out of the SERVING environment."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(schema_path) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    labels = [f for f in schema.feature if 'SERVING' in f.not_in_environment]
    if len(labels) != 1:
        raise LabelError('%s: expected one feature with not_in_environment: "SERVING" (the '
                         'label column), found %d: mark the label column in the schema'
                         % (schema_path, len(labels)))
    feature = labels[0]
    kind = schema_pb2.FeatureType.Name(feature.type)
    domain = (feature.float_domain if feature.HasField('float_domain') else
              feature.int_domain if feature.HasField('int_domain') else None)
    bound = (lambda name: getattr(domain, name) if domain is not None
             and domain.HasField(name) else None)
    return LabelSpec(feature.name, kind, bound('min'), bound('max'))


@dataclasses.dataclass(frozen=True)
class Label:
    request_id: str
    row: int
    value: object


def check_request_id(value, where):
    if not isinstance(value, str) or not REQUEST_ID_RE.match(value):
        raise LabelError('%s: request_id must be 1-128 characters of letters, digits and '
                         '._:@+=/- (starting with a letter or digit), got %s'
                         % (where, json.dumps(value)))
    return value


def _row(value, where):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LabelError('%s: row must be the row\'s index in its request (0, 1, ...), got %s'
                         % (where, json.dumps(value)))
    return value


def labels_from_json(document, spec):
    """The Labels of a feedback body `{"labels": [{request_id, row, <label>}, ...]}`."""
    items = document.get('labels') if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise LabelError('the body must be {"labels": [{"request_id": ..., "row": ..., '
                         '"%s": ...}, ...]} with at least one label' % spec.name)
    fields = {REQUEST_ID, ROW, spec.name}
    labels = []
    for i, item in enumerate(items):
        where = 'labels[%d]' % i
        if not isinstance(item, dict):
            raise LabelError('%s: expected an object, got %s' % (where, json.dumps(item)))
        extra = sorted(set(item) - fields)
        missing = sorted(fields - set(item))
        if extra or missing:
            raise LabelError('%s: expected the fields %s%s%s' % (
                where, ', '.join(sorted(fields)),
                '; missing ' + ', '.join(missing) if missing else '',
                '; unexpected ' + ', '.join(extra) if extra else ''))
        labels.append(Label(check_request_id(item[REQUEST_ID], where),
                            _row(item[ROW], where), spec.from_json(item[spec.name], where)))
    return labels


def labels_from_csv(path, spec):
    """The Labels of a CSV with the columns request_id,row,<label column>."""
    wanted = [REQUEST_ID, ROW, spec.name]
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            if sorted(reader.fieldnames or []) != sorted(wanted):
                raise LabelError('%s: the header must be %s, got %s' % (
                    path, ','.join(wanted), ','.join(reader.fieldnames or []) or 'nothing'))
            labels = []
            for row in reader:
                where = '%s line %d' % (path, reader.line_num)
                if None in row or None in row.values():
                    raise LabelError('%s: expected %d fields' % (where, len(wanted)))
                labels.append(Label(check_request_id(row[REQUEST_ID], where),
                                    _row(row[ROW], where),
                                    spec.from_text(row[spec.name], where)))
    except FileNotFoundError:
        raise LabelError('--labels %s does not exist' % path) from None
    except UnicodeDecodeError:
        raise LabelError('%s is not a UTF-8 CSV: re-export it as UTF-8' % path) from None
    if not labels:
        raise LabelError('%s has no labels: expected %s lines after the header'
                         % (path, ','.join(wanted)))
    return labels


class CapturedIndex:
    """Which (request id, row count) a capture holds: the rows labels may name.

    Loaded from the meta files on disk (published and unpublished parts) and
    told by the server of each request it queues for capture, so a label sent
    right after its prediction is known before its row reaches the disk.
    """

    def __init__(self):
        self._rows = {}
        self._lock = threading.Lock()

    def add(self, request_id, rows):
        with self._lock:
            self._rows[request_id] = max(rows, self._rows.get(request_id, 0))

    def __contains__(self, key):
        request_id, row = key
        with self._lock:
            return row < self._rows.get(request_id, 0)

    def load(self, capture_root):
        """Adds every row of every meta file under `capture_root`'s span folders."""
        for path in meta_files(capture_root, include_unpublished=True):
            for line in read_jsonl(path):
                if isinstance(line.get(REQUEST_ID), str) and isinstance(line.get(ROW), int):
                    self.add(line[REQUEST_ID], line[ROW] + 1)
        return self


def meta_files(capture_root, include_unpublished=False):
    """The meta files of every span-N under `capture_root` (temp ones too, if asked)."""
    found = []
    try:
        spans = sorted(n for n in os.listdir(capture_root) if re.match(r'^span-\d+$', n))
    except FileNotFoundError:
        return found
    for span in spans:
        directory = os.path.join(capture_root, span)
        for name in sorted(os.listdir(directory)):
            if name.endswith('.meta.jsonl') or (include_unpublished
                                                and name.endswith('.meta.jsonl.tmp')):
                found.append(os.path.join(directory, name))
    return found


def complete_lines(data):
    """The JSON objects of the complete lines in `data` (bytes read from the
    label log), and where the last complete line ends: a line still being
    written (or torn by a crash) is left for the caller."""
    end = data.rfind(b'\n') + 1
    entries = []
    for line in data[:end].splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries, end


def read_jsonl(path):
    """The JSON objects of a .jsonl file; a torn last line (a crash mid-write) is skipped."""
    out = []
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                if line.endswith('\n'):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return out


@dataclasses.dataclass(frozen=True)
class AppendResult:
    """How a batch of labels was taken: all of them are in the log."""
    accepted: int
    unknown: int
    duplicate: int

    def to_json(self):
        return dataclasses.asdict(self)


class LabelLog:
    """The append-only label log of one capture root (see the module docstring)."""

    def __init__(self, capture_root, spec, index=None):
        self.capture_root = os.path.abspath(capture_root)
        self.path = os.path.join(self.capture_root, LABEL_LOG)
        self.spec = spec
        self.index = index
        self._seen = set()
        self._offset = 0
        self._lock = threading.Lock()

    def append(self, labels, source, model=None, on_first=None):
        """Writes `labels` (one write, fsynced) and says how each was taken.

        `on_first(labels)`, if given, is called once the batch is durable with
        the labels that were the first for their row (the ones that count).
        """
        fsutil.makedirs_durable(self.capture_root)
        with self._lock, fsutil.file_lock(os.path.join(self.capture_root, _LOCK)):
            created = not os.path.exists(self.path)
            with open(self.path, 'a+b') as f:
                self._catch_up(f)
                lines, seen, counts = self._lines(labels, source, model)
                start = f.tell()
                try:
                    self._write(f, ''.join(lines).encode('utf-8'))
                except OSError:
                    # A full disk mid-batch: take back what got written, so an
                    # unacknowledged batch leaves nothing (the client resends).
                    f.truncate(start)
                    raise
                self._seen |= seen
                self._offset = f.tell()
            if created:
                fsutil.fsync_dir(self.capture_root)
        if on_first is not None:
            firsts, taken = [], set()
            for label in labels:
                key = (label.request_id, label.row)
                if key in seen and key not in taken:
                    taken.add(key)
                    firsts.append(label)
            on_first(firsts)
        return AppendResult(*counts)

    def _catch_up(self, f):
        """Reads lines other writers appended since our last look; cuts a torn tail."""
        f.seek(self._offset)
        data = f.read()
        entries, end = complete_lines(data)
        if end != len(data):  # a crash mid-write: never acknowledged, cut it
            f.truncate(self._offset + end)
        for entry in entries:
            try:
                self._seen.add((entry[REQUEST_ID], entry[ROW]))
            except (KeyError, TypeError):
                continue
        f.seek(0, os.SEEK_END)

    @staticmethod
    def _write(f, data):
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

    def _lines(self, labels, source, model):
        """The log lines of a batch, the keys it labels first, and its counts."""
        accepted = unknown = duplicate = 0
        lines = []
        seen = set()
        now = time.time()
        for label in labels:
            key = (label.request_id, label.row)
            entry = {REQUEST_ID: label.request_id, ROW: label.row, F_VALUE: label.value,
                     F_COLUMN: self.spec.name, F_MODEL: model, F_SOURCE: source, F_AT: now}
            if key in self._seen or key in seen:
                entry[F_DUPLICATE] = True
                duplicate += 1
            else:
                seen.add(key)
                known = self.index is None or key in self.index
                entry[F_KNOWN] = known
                accepted += known
                unknown += not known
            lines.append(json.dumps(entry, allow_nan=False) + '\n')
        return lines, seen, (accepted, unknown, duplicate)


def first_labels(capture_root):
    """{(request id, row): value} by the first-wins rule, and the duplicate count."""
    first = {}
    duplicates = 0
    for entry in read_jsonl(os.path.join(capture_root, LABEL_LOG)):
        try:
            key = (entry[REQUEST_ID], entry[ROW])
        except (KeyError, TypeError):
            continue
        if key in first:
            duplicates += 1
        else:
            first[key] = entry[F_VALUE]
    return first, duplicates
