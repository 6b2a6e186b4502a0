"""`make bench`: ours vs. TFX's taxi example (as shipped and in-memory), re-runs, scaling, serving.

    python -m bench                 # full: 3 pairs, 10k/100k/1M rows (tens of minutes)
    python -m bench --quick         # CI-sized: 1 pair with the in-memory reference only, on a
                                    # 2k-row sample; scaling at 2k (the pair's run) and 6k rows
    python -m bench --only scaling --sizes 10000,100000
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

from bench import reference

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_SAMPLE_ROWS = 2000
# The quick bench's first size is the sample's: the pair's cold run of ours is that point.
QUICK_SIZES = '%d,6000' % QUICK_SAMPLE_ROWS
# --references names -> result kinds (bench/reference.py's SHIPPED, IN_MEMORY).
REFERENCE_CHOICES = {'shipped': reference.SHIPPED, 'in_memory': reference.IN_MEMORY}
# CI's quick bench runs only the in-memory reference: the anchor the ≤ 0.5×
# target is set against; the shipped one is ~2× slower and adds minutes.
QUICK_REFERENCES = 'in_memory'


def _sample_csv(src, dst, rows):
    with open(src) as f, open(dst, 'w') as out:
        for i, line in enumerate(f):
            if i > rows:
                break
            out.write(line)
    return dst


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m bench', description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='CI-sized run (a few minutes)')
    p.add_argument('--pairs', type=int, help='reference/ours pairs (default 3, quick 1)')
    p.add_argument('--references', help='reference runs per pair, comma-separated: %s (default '
                   'both; quick: %s, the best-configured one)' % (','.join(REFERENCE_CHOICES),
                                                                  QUICK_REFERENCES))
    p.add_argument('--sizes', help='comma-separated row counts for scaling (default 10000,100000,1000000)')
    p.add_argument('--only', default='pipeline,scaling,serving',
                   help='comma-separated parts: pipeline (incl. accuracy and re-runs), scaling, serving')
    p.add_argument('--out', default=os.path.join(PROJECT_ROOT, 'bench', 'results'),
                   help='results folder (results.json, results.md, *.png)')
    p.add_argument('--work', help='scratch folder (default: a temp dir, removed afterwards)')
    args = p.parse_args(argv)
    names = (args.references or (QUICK_REFERENCES if args.quick else ','.join(REFERENCE_CHOICES))).split(',')
    unknown = [n for n in names if n not in REFERENCE_CHOICES]
    if unknown:
        p.error('--references: unknown %s; choose from %s' % (', '.join(unknown),
                                                              ','.join(REFERENCE_CHOICES)))
    references = tuple(kind for n, kind in REFERENCE_CHOICES.items() if n in names)
    sys.stdout.reconfigure(line_buffering=True)  # Progress lines show up even when piped.
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # Scoring imports TF in this process.
    import warnings
    warnings.filterwarnings('ignore')

    from bench import generate, pipeline_bench, report
    parts = set(args.only.split(','))
    pairs = args.pairs or (1 if args.quick else 3)
    sizes = [int(s) for s in (args.sizes or (QUICK_SIZES if args.quick else '10000,100000,1000000')).split(',')]
    work = args.work or tempfile.mkdtemp(prefix='tfx-canary-bench-')
    os.makedirs(work, exist_ok=True)
    results = {'machine': '%s, %d cores, Python %s' % (platform.machine(), os.cpu_count(), platform.python_version()),
               'quick': args.quick, 'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    measured = {}
    try:
        if 'pipeline' in parts:
            csv_path = generate.taxi_csv()
            if args.quick:
                csv_path = _sample_csv(csv_path, os.path.join(work, 'sample.csv'), QUICK_SAMPLE_ROWS)
            print('Pipeline vs. TFX taxi example (%s; %d pair%s, alternating, cold)...'
                  % (', '.join(references), pairs, 's' * (pairs > 1)))
            results['pipeline'], last = pipeline_bench.versus_reference(work, csv_path, pairs,
                                                                        references)
            print('Scoring every model on the same eval split...')
            results['accuracy'] = pipeline_bench.accuracy_on_same_split(last)
            print('Re-runs...')
            # Quick: no re-run after the first push (one pipeline run less in CI).
            results['rerun'] = pipeline_bench.rerun_and_new_span(
                last, 1000 if args.quick else 5000, after_first_push=not args.quick)
            if args.quick:   # Its cold run is the first scaling point: no second cold run.
                measured = {QUICK_SAMPLE_ROWS: pipeline_bench.pair_scaling_point(last, QUICK_SAMPLE_ROWS)}
        if 'scaling' in parts:
            print('Scaling: %s rows...' % ', '.join(map(str, sizes)))
            results['scaling'] = pipeline_bench.scaling(work, sizes, measured)
        if 'serving' in parts:
            try:
                from bench import serving_bench
            except ImportError:
                serving_bench = None
            if serving_bench is not None:
                print('Serving...')
                results['serving'] = serving_bench.run(work, quick=args.quick)
        md, pngs = report.write(results, args.out)
        print()
        print(md)
        print('Wrote %s (results.json, results.md%s)' % (args.out, ''.join(', ' + os.path.basename(x) for x in pngs)))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
