"""Capture of served requests, laid out as the next training span.

    <capture root>/span-N/part-<start>-<pid>-<seq>.csv         the features (training CSV header)
    <capture root>/span-N/part-<start>-<pid>-<seq>.meta.jsonl  one line per row: request id,
                                                           row, time, model, version, role,
                                                           prediction, capture rate

The CSV has exactly the columns of the training CSV (the schema's features, in
the schema's order), so the folder reads like any other data root
(`tfx-canary run --data-root <capture root>`). Columns the serving signature
does not carry are empty; that includes the label (`tips`), which the schema
keeps out of the SERVING environment: captured rows are serving data until
labels are joined to them (by request id, from the meta file).

Durability: a part is written as a hidden temp file, fsynced every flush
interval, and published by rename when it is rotated (by rows or age, and on
shutdown), meta file first, so a visible part is always complete and has its
meta. A crash loses at most the last flush interval; the next start publishes
what an interrupted part had fsynced (up to its last complete line).

The sink is pluggable: anything implementing CaptureSink can receive the
records (a message queue, object storage); CsvFileSink is the default.
"""
import abc
import csv
import dataclasses
import io
import json
import logging
import os
import queue
import random
import re
import threading
import time
import uuid

from rollout import fsutil

logger = logging.getLogger(__name__)

PART_RE = re.compile(r'^part-[0-9TZ]+-\d+-\d+\.csv$')
_TMP_RE = re.compile(r'^\.(part-[0-9TZ]+-\d+-\d+)\.(csv|meta\.jsonl)\.tmp$')


@dataclasses.dataclass
class CaptureRecord:
    """One served row: raw feature values plus how it was served."""
    features: dict
    request_id: str
    row: int
    served_at: float
    model: str
    version: int
    role: str
    prediction: float = None
    # The sampling rate the row was captured at: each captured row stands for
    # 1/rate served ones (recorded per row, since a restart may change it).
    capture_rate: float = None


def new_request_id():
    """A request id for a request whose client sent none."""
    return uuid.uuid4().hex


class CaptureSink(abc.ABC):
    """Where captured records go. Called from one writer thread only."""

    @abc.abstractmethod
    def write(self, records):
        """Accepts a list of CaptureRecords."""

    def flush(self):
        """Makes everything written so far durable."""

    def maybe_rotate(self, now):
        """Called periodically; lets a sink close parts by age."""

    def close(self):
        """Flushes and publishes everything; no writes after this."""


def header_from_schema(schema_path):
    """The training CSV header: the schema's feature names in the schema's order.

    (The curated schema was inferred from the training CSV, and CsvExampleGen
    does not care about column order anyway.)
    """
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    with open(schema_path) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    return [feature.name for feature in schema.feature]


def cell(value):
    """A feature value as CSV text, the way the training CSVs write it."""
    if value is None:
        return ''
    if isinstance(value, bytes):
        return value.decode('utf-8', errors='replace')
    if hasattr(value, 'dtype'):  # NumPy scalar
        if value.dtype.kind == 'f':
            # float32 prints its shortest round-trip text (41.88, not 41.880001).
            return str(value)
        value = value.item()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def span_dir(root, span):
    return os.path.join(root, 'span-%d' % span)


def latest_span(root):
    """The highest span-N under `root`, or None."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return None
    spans = [int(m.group(1)) for m in (re.match(r'^span-(\d+)$', n) for n in names) if m]
    return max(spans) if spans else None


def span_parts(root, span=None):
    """(span, its published part files): `span`, or the latest; (None, []) when there is none."""
    if span is None:
        span = latest_span(root)
    return span, (part_files(root, span) if span is not None else [])


def part_files(root, span):
    directory = span_dir(root, span)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if PART_RE.match(n))


class CsvFileSink(CaptureSink):
    """Writes records as CSV parts of one span folder (see the module docstring)."""

    def __init__(self, root, span, header, max_rows=10000, max_seconds=300.0):
        self.root = os.path.abspath(root)
        self.span = span
        self.header = list(header)
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.directory = span_dir(self.root, span)
        fsutil.makedirs_durable(self.directory)
        self._prefix = 'part-%s-%d' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()),
                                       os.getpid())
        self._seq = 0
        self._part = None
        self.published = []
        self.recovered = recover_parts(self.directory)

    # One open part: [name, csv file, meta file, csv writer, rows, opened_at]
    def _open(self):
        # Skip names already taken: a second sink of this process started in
        # the same second (same prefix) must not replace the first one's parts.
        while True:
            name = '%s-%05d' % (self._prefix, self._seq)
            self._seq += 1
            if not any(os.path.exists(os.path.join(self.directory, n)) for n in (
                    name + '.csv', name + '.meta.jsonl', '.%s.csv.tmp' % name)):
                break
        data = open(os.path.join(self.directory, '.%s.csv.tmp' % name), 'w', newline='',
                    encoding='utf-8')
        meta = open(os.path.join(self.directory, '.%s.meta.jsonl.tmp' % name), 'w',
                    encoding='utf-8')
        writer = csv.writer(data, lineterminator='\n')
        writer.writerow(self.header)
        self._part = [name, data, meta, writer, 0, time.monotonic()]

    def write(self, records):
        for record in records:
            if self._part is None:
                self._open()
            part = self._part
            part[3].writerow([cell(record.features.get(col)) for col in self.header])
            part[2].write(json.dumps({
                'request_id': record.request_id, 'row': record.row,
                'served_at': record.served_at, 'model': record.model,
                'version': record.version, 'role': record.role,
                'prediction': record.prediction,
                'capture_rate': record.capture_rate}) + '\n')
            part[4] += 1
            if part[4] >= self.max_rows:
                self.rotate()

    def flush(self):
        if self._part is None:
            return
        for handle in self._part[1:3]:
            handle.flush()
            os.fsync(handle.fileno())

    def maybe_rotate(self, now):
        if self._part is not None and now - self._part[5] >= self.max_seconds:
            self.rotate()

    def rotate(self):
        """Publishes the open part: fsync, rename meta then CSV, fsync the folder."""
        if self._part is None:
            return
        self.flush()
        name, data, meta = self._part[:3]
        data.close()
        meta.close()
        self._part = None
        for suffix in ('meta.jsonl', 'csv'):
            os.replace(os.path.join(self.directory, '.%s.%s.tmp' % (name, suffix)),
                       os.path.join(self.directory, '%s.%s' % (name, suffix)))
        fsutil.fsync_dir(self.directory)
        self.published.append(os.path.join(self.directory, name + '.csv'))

    def close(self):
        self.rotate()


def _truncate_to_last_line(path):
    with open(path, 'rb') as f:
        data = f.read()
    end = data.rfind(b'\n') + 1
    if end != len(data):
        with open(path, 'r+b') as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return data[:end].count(b'\n')


def recover_parts(directory):
    """Publishes parts a crashed writer left as temp files; returns their paths.

    Whatever was fsynced up to the last complete line is kept: a header-only
    part is deleted.
    """
    recovered = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return recovered
    temps = {}
    for n in names:
        match = _TMP_RE.match(n)
        if match:
            temps.setdefault(match.group(1), {})[match.group(2)] = os.path.join(directory, n)
    for name, files in temps.items():
        data = files.get('csv')
        meta = files.get('meta.jsonl')
        lines = _truncate_to_last_line(data) if data else 0
        if lines < 2:  # header only, or nothing
            for path in files.values():
                os.unlink(path)
            continue
        if meta:
            _truncate_to_last_line(meta)
            os.replace(meta, os.path.join(directory, name + '.meta.jsonl'))
        final = os.path.join(directory, name + '.csv')
        os.replace(data, final)
        recovered.append(final)
        logger.warning('capture: published %s left by an interrupted writer', final)
    if temps:
        fsutil.fsync_dir(directory)
    return recovered


@dataclasses.dataclass
class CaptureBatch:
    """A sampled request, queued for the writer thread."""
    rows: object           # callable -> list of feature dicts (runs in the writer)
    request_id: str
    served_at: float
    model: str
    version: int
    role: str
    predictions: list


def feature_rows(arrays, specs):
    """Callable turning a request's input arrays into per-row feature dicts.

    Raw-feature signatures (one [batch] tensor per feature) map directly; a
    signature taking serialized tf.Examples is parsed. Anything else cannot be
    laid out as CSV rows and yields no rows. The work is deferred to the
    writer thread, off the request path.
    """
    def rows():
        if len(specs) == 1:
            (alias, spec), = specs.items()
            array = arrays[alias]
            if spec.dtype == 'DT_STRING' and array.ndim == 1 and alias == 'examples':
                return [_example_features(serialized) for serialized in array]
        lengths = {a.shape[0] if a.ndim == 1 else -1 for a in arrays.values()}
        if len(lengths) != 1 or -1 in lengths:
            return []
        (count,) = lengths
        return [{name: array[i] for name, array in arrays.items()} for i in range(count)]
    return rows


def _example_features(serialized):
    from tensorflow.core.example import example_pb2
    example = example_pb2.Example.FromString(serialized)
    values = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof('kind')
        items = list(getattr(feature, kind).value) if kind else []
        values[name] = items[0] if items else None
    return values


class CaptureWriter:
    """Samples requests and writes them through a sink on a background thread.

    submit() never blocks a request: when the queue is full the batch is
    dropped and counted.
    """

    def __init__(self, sink, rate, queue_size=10000, flush_seconds=1.0,
                 timestamp_column=None, metrics=None, seed=None):
        if not 0.0 <= rate <= 1.0:
            raise ValueError('capture rate must be between 0 and 1, got %r' % rate)
        self.sink = sink
        self.rate = rate
        self.flush_seconds = flush_seconds
        self.timestamp_column = timestamp_column
        self.metrics = metrics
        self._random = random.Random(seed)
        self._queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name='capture-writer', daemon=True)
        self.rows_written = 0
        self.dropped = 0
        self.errors = 0
        self._thread.start()

    def sampled(self):
        return self.rate > 0 and self._random.random() < self.rate

    new_request_id = staticmethod(new_request_id)

    def submit(self, batch):
        try:
            self._queue.put_nowait(batch)
            return True
        except queue.Full:
            self.dropped += 1
            if self.metrics:
                self.metrics.capture_dropped.inc()
            return False

    def _records(self, batch):
        records = []
        for i, features in enumerate(batch.rows()):
            if self.timestamp_column and features.get(self.timestamp_column) is None:
                # The serving signature has no timestamp; the request time is
                # when the trip started, as far as the model is concerned.
                features[self.timestamp_column] = int(batch.served_at)
            prediction = batch.predictions[i] if i < len(batch.predictions) else None
            records.append(CaptureRecord(features, batch.request_id, i, batch.served_at,
                                         batch.model, batch.version, batch.role, prediction,
                                         self.rate))
        return records

    def _run(self):
        last_flush = time.monotonic()
        stop = False
        while not stop:
            timeout = max(0.0, self.flush_seconds - (time.monotonic() - last_flush))
            batches = []
            try:
                item = self._queue.get(timeout=timeout)
                batches.append(item)
                while len(batches) < 512:  # drain what is queued, boundedly
                    batches.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            if None in batches:  # close() was called: write what came before, stop
                stop = True
                batches = batches[:batches.index(None)]
            try:
                records = [r for b in batches for r in self._records(b)]
                if records:
                    self.sink.write(records)
                    self.rows_written += len(records)
                    if self.metrics:
                        self.metrics.capture_rows.inc(len(records))
                now = time.monotonic()
                if stop or now - last_flush >= self.flush_seconds:
                    self.sink.flush()
                    self.sink.maybe_rotate(now)
                    last_flush = now
            except Exception:  # noqa: BLE001  capture must never take serving down
                self.errors += 1
                if self.metrics:
                    self.metrics.capture_dropped.inc(sum(len(b.predictions) for b in batches))
                logger.exception('capture: write failed; these rows are lost')

    def close(self):
        """Writes what is queued, publishes the open part and stops the thread."""
        while True:
            try:
                self._queue.put(None, timeout=1.0)
                break
            except queue.Full:
                continue
        self._thread.join(timeout=60)
        self.sink.close()


def read_parts(paths):
    """Rows of capture parts as dicts (for tests and tools)."""
    rows = []
    for path in paths:
        with open(path, newline='', encoding='utf-8') as f:
            rows.extend(csv.DictReader(f))
    return rows


def read_meta(csv_path):
    meta_path = csv_path[:-len('.csv')] + '.meta.jsonl'
    with open(meta_path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def csv_text(header, rows):
    """CSV text with `header` for dict rows (missing columns empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(row.get(col)) for col in header])
    return out.getvalue()
