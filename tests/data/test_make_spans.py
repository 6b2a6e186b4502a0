"""The span split is time-ordered, complete and reproducible."""
import csv
import importlib.util
import os

from tests.conftest import DATA_ROOT

spec = importlib.util.spec_from_file_location('make_spans', os.path.join(DATA_ROOT, 'make_spans.py'))
make_spans = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_spans)

LINES = ['a,trip_start_timestamp', 'x,30', 'y,10', 'z,20', 'w,10', 'v,40']


def test_rows_are_sorted_by_time_and_split_evenly():
    header, parts = make_spans.split_rows(LINES, 2)
    assert header == LINES[0]
    assert parts == [['y,10', 'w,10', 'z,20'], ['x,30', 'v,40']]


def test_every_row_lands_in_exactly_one_span():
    _, parts = make_spans.split_rows(LINES, 3)
    assert sorted(sum(parts, [])) == sorted(LINES[1:])


def test_bundled_spans_are_time_ordered():
    last_max = None
    for n in (1, 2, 3):
        with open(os.path.join(DATA_ROOT, 'span-%d' % n, 'data.csv')) as f:
            ts = [int(r['trip_start_timestamp']) for r in csv.DictReader(f)]
        assert len(ts) > 4000
        if last_max is not None:
            assert min(ts) >= last_max
        last_max = max(ts)


def test_rebuild_reproduces_the_committed_spans(tmp_path):
    make_spans.write_spans(make_spans.source_csv_path(), str(tmp_path), 3)
    for n in (1, 2, 3):
        name = os.path.join('span-%d' % n, 'data.csv')
        with open(tmp_path / name, 'rb') as a, open(os.path.join(DATA_ROOT, name), 'rb') as b:
            assert a.read() == b.read()
