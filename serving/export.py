"""`capture export`: captured rows joined with their labels, written as a training span.

    DIR/span-N/data.csv                 the training CSV's header; only labeled rows
    DIR/span-N/capture-manifest.json    where the rows came from (MANIFEST_* keys)

Rows are joined with the label log by (request id, row), first label wins
(serving/labels.py). Only rows of published parts are read; a label whose row
is still in an unpublished part is counted as pending (export again once
`serve` has published it), one whose row is nowhere as unknown. Rows whose
label no longer fits the schema's label column are rejected (counted, never
written). The server captures only requests it answered 200, so rows it
refused never reach a capture part, let alone a training span.

The span is built in a hidden temp folder (files and folder fsynced) and
renamed into place under a lock, so a reader sees the whole span or none, and
an existing span-N is never replaced. The pipeline reads DIR like any other
data root: `tfx-canary run --data-root DIR --span N`.
"""
import csv
import dataclasses
import datetime
import json
import os
import re
import shutil

from common import capture_manifest
from common.errors import TfxCanaryError
from rollout import fsutil
from serving import capture, labels

DATA_FILE = 'data.csv'
# The manifest's name and reader are in common/ (lineage reads it too); what
# goes into it is decided here (`_manifest`).
MANIFEST = capture_manifest.FILE_NAME
MANIFEST_FORMAT = capture_manifest.FORMAT
SOURCE = capture_manifest.SOURCE
read_manifest = capture_manifest.read   # read_manifest(span folder) -> dict or None
_LOCK = '.export.lock'
_TEMP_RE = re.compile(r'^\.span-\d+\.export-\d+\.tmp$')


class ExportError(TfxCanaryError):
    """The capture cannot be exported as a span (the message says why and what to do)."""


@dataclasses.dataclass(frozen=True)
class Counts:
    """What one export found, for its manifest and the command's summary."""
    captured: int
    labeled: int              # written to the span
    unlabeled: int
    rejected: int             # labeled, but the label does not fit the schema now
    labels_pending: int       # labels for rows in unpublished parts
    labels_unknown: int       # labels for rows in no part at all
    labels_duplicate: int


@dataclasses.dataclass(frozen=True)
class ExportResult:
    span: int
    directory: str
    counts: Counts
    manifest: dict


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def _read_part(path):
    """(header, rows, meta lines) of one published part; rows and meta line up."""
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    meta = capture.read_meta(path)
    if header is None or len(meta) != len(rows):
        raise ExportError('%s has %d rows but its meta file %d lines: the part is damaged; '
                          'move it out of the capture folder and export again'
                          % (path, len(rows), len(meta)))
    return header, rows, meta


def _pending_keys(capture_root):
    """(request id, row) of the rows in unpublished parts (still being written)."""
    index = labels.CapturedIndex()
    for path in labels.meta_files(capture_root, include_unpublished=True):
        if path.endswith('.tmp'):
            for line in labels.read_jsonl(path):
                index.add(line.get(labels.REQUEST_ID), line.get(labels.ROW, -1) + 1)
    return index


def next_free_span(data_root):
    taken = [int(m.group(1)) for m in (re.match(r'^span-(\d+)$', n)
                                       for n in os.listdir(data_root)) if m]
    return max(taken, default=0) + 1


def _existing_header(data_root):
    """The header of the newest span already in `data_root` (spans are read as one table)."""
    newest = capture.latest_span(data_root)
    if newest is None:
        return None, None
    directory = capture.span_dir(data_root, newest)
    for name in sorted(os.listdir(directory)):
        if name.endswith('.csv'):
            with open(os.path.join(directory, name), newline='', encoding='utf-8') as f:
                return next(csv.reader(f), None), os.path.join(directory, name)
    return None, None


def _join(parts, spec, first):
    """Labeled rows (header, [row], [meta]) and the counts of what was left out."""
    header = None
    out_rows, out_meta = [], []
    captured = rejected = 0
    used = set()
    for path in parts:
        part_header, rows, meta = _read_part(path)
        if header is None:
            header = part_header
            if spec.name not in header:
                raise ExportError('%s has no %s column: the capture was written with a '
                                  'schema without the label column' % (path, spec.name))
        elif part_header != header:
            raise ExportError('%s has another header than %s: export its span separately'
                              % (path, parts[0]))
        column = header.index(spec.name)
        for row, line in zip(rows, meta):
            captured += 1
            key = (line.get(labels.REQUEST_ID), line.get(labels.ROW))
            if key not in first:
                continue
            used.add(key)
            try:
                value = spec.check(first[key], 'label for %s row %s' % key)
            except labels.LabelError:
                rejected += 1
                continue
            row = list(row)
            row[column] = capture.cell(value)
            out_rows.append(row)
            out_meta.append(line)
    return header, out_rows, out_meta, captured, rejected, used


def _manifest(capture_root, capture_span, parts, spec, meta, counts, rates):
    served = {}
    for line in meta:
        key = (line.get('model'), line.get('version'), line.get('role'))
        served[key] = served.get(key, 0) + 1
    times = [line['served_at'] for line in meta if isinstance(line.get('served_at'), float)]
    rate = rates[0] if len(rates) == 1 else None
    return {
        'format': MANIFEST_FORMAT,
        'source': SOURCE,
        'capture_dir': capture_root,
        'capture_span': capture_span,
        'parts': [os.path.basename(p) for p in parts],
        'label_column': spec.name,
        'exported_at': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'time_range': {'first_served_at': _iso(min(times)) if times else None,
                       'last_served_at': _iso(max(times)) if times else None},
        'served_by': [{'model': m, 'version': v, 'role': r, 'rows': n}
                      for (m, v, r), n in sorted(served.items(), key=str)],
        'rows': {'captured': counts.captured, 'labeled': counts.labeled,
                 'unlabeled': counts.unlabeled, 'rejected': counts.rejected},
        'labels': {'pending': counts.labels_pending, 'unknown': counts.labels_unknown,
                   'duplicate': counts.labels_duplicate},
        # Capture samples requests uniformly at this rate, stable and canary
        # alike: weight each row by 1/rate to stand for all that was served.
        'capture_rate': rate,
        'capture_rates': rates,
    }


def export(capture_root, capture_span, data_root, spec, span=None):
    """Writes the labeled rows of one capture span as data_root/span-N; ExportResult."""
    capture_root = os.path.abspath(capture_root)
    capture_span, parts = capture.span_parts(capture_root, capture_span)
    if capture_span is None:
        raise ExportError('no capture spans in %s: start `tfx-canary serve --capture-rate '
                          'R` (or pass --capture-dir)' % capture_root)
    if not parts:
        raise ExportError('capture span %d in %s has no published parts yet: `serve` publishes '
                          'a part when it rotates or stops' % (capture_span, capture_root))
    first, duplicates = labels.first_labels(capture_root)
    header, rows, meta, captured, rejected, used = _join(parts, spec, first)
    pending_index = _pending_keys(capture_root)
    # Only this span's rows can be matched here: labels for other spans' rows
    # are neither pending nor unknown for this export, so look them up too.
    other = _other_span_keys(capture_root, capture_span)
    left = [k for k in first if k not in used and k not in other]
    pending = sum(1 for k in left if k in pending_index)
    counts = Counts(captured, len(rows), captured - len(rows) - rejected, rejected,
                    pending, len(left) - pending, duplicates)
    if not rows:
        raise ExportError('capture span %d in %s has no labeled rows (%d captured, %d labels '
                          'pending, %d unknown): deliver labels with `tfx-canary capture label` '
                          'or POST /v1/models/NAME:feedback first; nothing written'
                          % (capture_span, capture_root, captured, pending, counts.labels_unknown))
    rates = sorted({line.get('capture_rate') for line in meta
                    if line.get('capture_rate') is not None})
    manifest = _manifest(capture_root, capture_span, parts, spec, meta, counts, rates)
    span, directory, manifest = _publish(data_root, span, header, rows, manifest)
    return ExportResult(span, directory, counts, manifest)


def _other_span_keys(capture_root, capture_span):
    index = labels.CapturedIndex()
    for path in labels.meta_files(capture_root):
        if os.path.basename(os.path.dirname(path)) != 'span-%d' % capture_span:
            for line in labels.read_jsonl(path):
                index.add(line.get(labels.REQUEST_ID), line.get(labels.ROW, -1) + 1)
    return index


def _publish(data_root, span, header, rows, manifest):
    """Writes the span under a lock: temp folder, fsync, rename; never over an existing one.

    Returns (span, its folder, the manifest as written).
    """
    data_root = os.path.abspath(data_root)
    fsutil.makedirs_durable(data_root)
    with fsutil.file_lock(os.path.join(data_root, _LOCK)):
        for name in os.listdir(data_root):
            if _TEMP_RE.match(name):  # left by an export that was killed
                shutil.rmtree(os.path.join(data_root, name), ignore_errors=True)
        existing, where = _existing_header(data_root)
        if existing is not None and existing != header:
            raise ExportError('the captured rows have another header than %s: export into '
                              'another --data-root (the pipeline reads a data root\'s spans '
                              'as one table)' % where)
        if span is None:
            span = next_free_span(data_root)
        target = capture.span_dir(data_root, span)
        if os.path.exists(target):
            raise ExportError('%s already exists: exports never replace a span; pass another '
                              '--span or leave it out for the next free number' % target)
        manifest = dict(manifest, span=span)
        temp = os.path.join(data_root, '.span-%d.export-%d.tmp' % (span, os.getpid()))
        os.mkdir(temp)
        try:
            _write_durable(os.path.join(temp, DATA_FILE), _csv_text(header, rows))
            _write_durable(os.path.join(temp, MANIFEST),
                           json.dumps(manifest, indent=1, sort_keys=True) + '\n')
            fsutil.fsync_dir(temp)
            os.rename(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        fsutil.fsync_dir(data_root)
    return span, target, manifest


def _csv_text(header, rows):
    import io
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _write_durable(path, text):
    with open(path, 'w', encoding='utf-8', newline='') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
