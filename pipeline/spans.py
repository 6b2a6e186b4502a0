"""Finds the span folders under a data root and checks them before a run.

ExampleGen's own errors for a missing folder or a broken CSV surface deep in a
Beam traceback; these checks fail first with one line naming the path and the fix.
Schema problems (a missing column, out-of-domain values) are *not* checked here:
that is TFDV's job, through ExampleValidator and the ValidationGate.
"""
import csv
import glob
import os
import re

from common.errors import TfxCanaryError


class DataError(TfxCanaryError):
    """The input data cannot be read as CSV spans."""


def _span_regex(span_dir_pattern):
    return re.compile('^' + re.escape(span_dir_pattern).replace(re.escape('{SPAN}'), r'(\d+)') + '$')


def available_spans(data_root, span_pattern):
    """Sorted span numbers found under data_root for a pattern like 'span-{SPAN}/*.csv'."""
    if not os.path.isdir(data_root):
        raise DataError('data folder %s does not exist: pass --data-root with a folder holding '
                        'span-N/ sub-folders of CSV files' % data_root)
    span_dir_pattern = span_pattern.split('/')[0]
    regex = _span_regex(span_dir_pattern)
    spans = sorted(int(m.group(1)) for m in (regex.match(n) for n in os.listdir(data_root)) if m)
    if not spans:
        raise DataError('no span folders in %s: expected sub-folders matching %r (e.g. %s)'
                        % (data_root, span_dir_pattern, span_dir_pattern.replace('{SPAN}', '1')))
    return spans


def span_files(data_root, span_pattern, span):
    return sorted(glob.glob(os.path.join(data_root, span_pattern.replace('{SPAN}', str(span)))))


def check_csv(path):
    """Raises DataError unless `path` is a readable CSV with a header and >= 1 row."""
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise DataError('%s is empty: a span CSV needs a header line and at least one row' % path)
            first = next(reader, None)
            if first is None:
                raise DataError('%s has a header but no rows: add data or remove the span' % path)
            if len(first) != len(header):
                raise DataError('%s: row 2 has %d fields but the header has %d: fix the CSV '
                                '(quote fields that contain commas)' % (path, len(first), len(header)))
            return header
    except UnicodeDecodeError as e:
        raise DataError('%s is not a UTF-8 text CSV (byte %d): re-export it as UTF-8 CSV'
                        % (path, e.start)) from None
    except csv.Error as e:
        raise DataError('%s is not valid CSV: %s' % (path, e)) from None
    except OSError as e:
        raise DataError('cannot read %s: %s' % (path, e.strerror)) from None


def check_span(data_root, span_pattern, span=None):
    """Resolves `span` (None = latest) and checks its files; returns (span, files)."""
    spans = available_spans(data_root, span_pattern)
    if span is None:
        span = spans[-1]
    elif span not in spans:
        raise DataError('span %d not found in %s: available spans are %s'
                        % (span, data_root, ', '.join(map(str, spans))))
    files = span_files(data_root, span_pattern, span)
    if not files:
        raise DataError('span %d in %s has no files matching %r: put the CSV files in %s'
                        % (span, data_root, span_pattern,
                           os.path.join(data_root, os.path.dirname(span_pattern.replace('{SPAN}', str(span))))))
    for path in files:
        check_csv(path)
    return span, files


def check_span_range(data_root, span_pattern, first, last):
    """Checks every span first..last (inclusive); returns all their files, oldest span first.

    Names every span that is missing or has no files, then any unreadable CSV,
    then a CSV whose header differs from the first span's (the spans are read
    as one table, so their columns must agree).
    """
    spans = available_spans(data_root, span_pattern)
    wanted = range(first, last + 1)
    missing = [s for s in wanted if s not in spans]
    if missing:
        raise DataError('span range %d-%d: span%s %s not found in %s: available spans are %s'
                        % (first, last, 's' if len(missing) > 1 else '',
                           ', '.join(map(str, missing)), data_root, ', '.join(map(str, spans))))
    files_by_span = {s: span_files(data_root, span_pattern, s) for s in wanted}
    empty = [s for s in wanted if not files_by_span[s]]
    if empty:
        raise DataError('span range %d-%d: span%s %s in %s ha%s no files matching %r'
                        % (first, last, 's' if len(empty) > 1 else '', ', '.join(map(str, empty)),
                           data_root, 've' if len(empty) > 1 else 's', span_pattern))
    files = [path for s in wanted for path in files_by_span[s]]
    header = None
    for path in files:
        this = check_csv(path)
        if header is None:
            header = this
        elif this != header:
            raise DataError('%s has a different CSV header than %s: every span of a span range '
                            'needs the same columns in the same order' % (path, files[0]))
    return files
