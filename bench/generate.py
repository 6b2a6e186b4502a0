"""Deterministic taxi-like data: same columns as the Chicago taxi CSV, any size.

Rows are bootstrapped from the real taxi sample (so joint structure — fare vs.
miles vs. seconds, payment type vs. tips, area vs. coordinates — stays
realistic), numerics get small multiplicative jitter and coordinates a few
metres of noise, and every row gets a new timestamp. `drift` in [0, 1] moves
the payment mix toward credit cards and scales fares up, to make a newer span
that TFDV's drift comparators notice.

    python -m bench.generate OUT_DIR --rows 100000 [--span 1] [--seed 0] [--drift 0.0]
"""
import argparse
import csv
import os
import sys

import numpy as np

NUMERIC_JITTER = ('fare', 'trip_miles', 'trip_seconds', 'tips')
COORDS = ('pickup_latitude', 'pickup_longitude', 'dropoff_latitude', 'dropoff_longitude')


def taxi_csv():
    """The Chicago taxi sample shipped inside the installed tfx package."""
    from bench import reference
    return os.path.join(reference.example_dir(), 'data', 'simple', 'data.csv')


def load_source(path):
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _fmt(x):
    return ('%.6f' % x).rstrip('0').rstrip('.') if x != int(x) else str(int(x))


def generate(source_path, rows, seed=0, drift=0.0):
    """Yields (header, iterator of row lists)."""
    header, source = load_source(source_path)
    rng = np.random.default_rng(seed)
    n = len(source)
    weights = np.ones(n)
    if drift:
        card = np.array([r['payment_type'] == 'Credit Card' for r in source])
        weights = np.where(card, 1.0 + 3.0 * drift, 1.0)
    weights /= weights.sum()
    start_ts = 1483228800  # 2017-01-01: generated spans come after the bundled ones.

    def rows_iter():
        chunk = 50000
        done = 0
        while done < rows:
            k = min(chunk, rows - done)
            picks = rng.choice(n, size=k, p=weights)
            jitter = rng.normal(1.0, 0.03, size=(k, len(NUMERIC_JITTER)))
            noise = rng.normal(0.0, 0.0005, size=(k, len(COORDS)))
            for j, i in enumerate(picks):
                row = dict(source[i])
                for c, key in enumerate(NUMERIC_JITTER):
                    if row[key] != '':
                        value = max(0.0, float(row[key]) * jitter[j, c] * (1.0 + 0.2 * drift if key == 'fare' else 1.0))
                        row[key] = _fmt(round(value)) if key == 'trip_seconds' else _fmt(round(value, 2))
                for c, key in enumerate(COORDS):
                    if row[key] != '':
                        row[key] = _fmt(round(float(row[key]) + noise[j, c], 6))
                row['trip_start_timestamp'] = str(start_ts + (done + j) * 60)
                yield [row[h] for h in header]
            done += k

    return header, rows_iter()


def write_span(out_dir, span, rows, seed=0, drift=0.0, source_path=None):
    """Writes OUT_DIR/span-N/data.csv atomically; returns its path."""
    if source_path is None:
        source_path = taxi_csv()
    header, it = generate(source_path, rows, seed, drift)
    path = os.path.join(out_dir, 'span-%d' % span, 'data.csv')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(header)
        writer.writerows(it)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('out_dir')
    p.add_argument('--rows', type=int, required=True)
    p.add_argument('--span', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--drift', type=float, default=0.0)
    args = p.parse_args(argv)
    print(write_span(args.out_dir, args.span, args.rows, args.seed, args.drift))
    return 0


if __name__ == '__main__':
    sys.exit(main())
