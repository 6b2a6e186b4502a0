"""Rebuild data/taxi/span-N/data.csv from the Chicago taxi CSV shipped with tfx.

The split is the retraining story: rows are ordered by `trip_start_timestamp`
and cut into N equal, time-ordered spans, so span N+1 is always newer data than
span N. Rows are copied byte for byte (no re-formatting), and the sort is
stable, so the output is identical on every machine.

    python data/taxi/make_spans.py                 # 3 spans next to this file
    python data/taxi/make_spans.py --spans 5 --out /tmp/taxi
"""
import argparse
import csv
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TIMESTAMP_COLUMN = 'trip_start_timestamp'


def source_csv_path():
    """The taxi CSV inside the installed tfx package."""
    import tfx  # Imported here so --help works without the TFX stack.
    return os.path.join(os.path.dirname(tfx.__file__), 'examples',
                        'chicago_taxi_pipeline', 'data', 'simple', 'data.csv')


def split_rows(lines, num_spans):
    """Returns (header, [span rows...]) with rows sorted by timestamp.

    `lines` are the raw CSV lines (header first); each row keeps its original
    text so the spans are byte-identical to the source rows.
    """
    if num_spans < 1:
        raise ValueError('num_spans must be >= 1, got %d' % num_spans)
    header, rows = lines[0], lines[1:]
    columns = next(csv.reader([header]))
    if TIMESTAMP_COLUMN not in columns:
        raise ValueError('source CSV has no %r column' % TIMESTAMP_COLUMN)
    ts_index = columns.index(TIMESTAMP_COLUMN)
    keyed = []
    for line in rows:
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        keyed.append((int(fields[ts_index]), line))
    keyed.sort(key=lambda kv: kv[0])  # Stable: ties keep source order.
    size, extra = divmod(len(keyed), num_spans)
    spans, start = [], 0
    for i in range(num_spans):
        end = start + size + (1 if i < extra else 0)
        spans.append([line for _, line in keyed[start:end]])
        start = end
    return header, spans


def write_spans(source, out_dir, num_spans):
    with open(source, newline='') as f:
        lines = f.read().splitlines()
    header, spans = split_rows(lines, num_spans)
    for i, rows in enumerate(spans, start=1):
        span_dir = os.path.join(out_dir, 'span-%d' % i)
        os.makedirs(span_dir, exist_ok=True)
        path = os.path.join(span_dir, 'data.csv')
        tmp = path + '.tmp'
        with open(tmp, 'w', newline='') as f:
            f.write('\n'.join([header] + rows) + '\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        print('wrote %s (%d rows)' % (path, len(rows)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--source', help='taxi CSV (default: the one inside the installed tfx package)')
    parser.add_argument('--out', default=HERE, help='folder to write span-N/ into (default: %(default)s)')
    parser.add_argument('--spans', type=int, default=3, help='number of spans (default: %(default)s)')
    args = parser.parse_args(argv)
    write_spans(args.source or source_csv_path(), args.out, args.spans)
    return 0


if __name__ == '__main__':
    sys.exit(main())
