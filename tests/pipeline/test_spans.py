"""Bad input data: one clear error line naming the path, non-zero exit, nothing trained."""
import os
import subprocess
import sys

import pytest

from pipeline import spans
from tests.conftest import DATA_ROOT

HEADER = ['fare', 'tips', 'trip_start_timestamp']


def _write(path, text, mode='w'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def test_latest_span_is_found_in_bundled_data():
    assert spans.available_spans(DATA_ROOT, 'span-{SPAN}/*.csv') == [1, 2, 3]
    span, files = spans.check_span(DATA_ROOT, 'span-{SPAN}/*.csv')
    assert span == 3 and files[0].endswith('span-3/data.csv')


def test_span_numbers_sort_numerically(tmp_path):
    for n in (2, 10, 9):
        _write(str(tmp_path / ('span-%d' % n) / 'a.csv'), 'a,b\n1,2\n')
    assert spans.available_spans(str(tmp_path), 'span-{SPAN}/*.csv') == [2, 9, 10]


@pytest.mark.parametrize('setup,message', [
    (lambda d: None, 'does not exist'),
    (lambda d: os.makedirs(d), 'no span folders'),
    (lambda d: os.makedirs(os.path.join(d, 'span-1')), 'no files matching'),
    (lambda d: _write(os.path.join(d, 'span-1', 'a.csv'), ''), 'is empty'),
    (lambda d: _write(os.path.join(d, 'span-1', 'a.csv'), 'a,b\n'), 'no rows'),
    (lambda d: _write(os.path.join(d, 'span-1', 'a.csv'), 'a,b\n1,2,3\n'), 'row 2 has 3 fields'),
    (lambda d: _write(os.path.join(d, 'span-1', 'a.csv'), b'\x89PNG\r\n\x1a\n\xff\xfe', 'wb'), 'not a UTF-8'),
])
def test_bad_data_raises_data_error_naming_the_path(tmp_path, setup, message):
    root = str(tmp_path / 'data')
    setup(root)
    with pytest.raises(spans.DataError, match=message) as e:
        spans.check_span(root, 'span-{SPAN}/*.csv')
    assert root in str(e.value)


def test_unknown_span_lists_available(tmp_path):
    _write(str(tmp_path / 'span-1' / 'a.csv'), 'a\n1\n')
    with pytest.raises(spans.DataError, match='span 7 not found.*available spans are 1'):
        spans.check_span(str(tmp_path), 'span-{SPAN}/*.csv', 7)


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'runners.cli', *args], capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(DATA_ROOT) + '/..')


@pytest.mark.parametrize('make_root,message', [
    (lambda t: str(t / 'missing'), 'does not exist'),
    (lambda t: (_write(str(t / 'd' / 'span-1' / 'x.csv'), ''), str(t / 'd'))[1], 'is empty'),
    (lambda t: (_write(str(t / 'd' / 'span-1' / 'x.csv'), b'\xff\xfe\x00bad', 'wb'), str(t / 'd'))[1],
     'not a UTF-8'),
])
def test_cli_bad_input_prints_one_error_line_and_exits_non_zero(tmp_path, make_root, message):
    root = make_root(tmp_path)
    ws = tmp_path / 'ws'
    result = _cli('run', '--data-root', root, '--workspace', str(ws))
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], result.stderr
    assert not ws.exists()  # Nothing was started.


def test_cli_checks_every_requested_span_before_training(tmp_path):
    _write(str(tmp_path / 'd' / 'span-1' / 'x.csv'), 'a\n1\n')
    result = _cli('run', '--data-root', str(tmp_path / 'd'), '--workspace', str(tmp_path / 'ws'),
                  '--span', '1', '--span', '4')
    assert result.returncode == 2 and 'span 4 not found' in result.stderr
    assert not (tmp_path / 'ws').exists()


def test_cli_help_explains_every_command():
    top = _cli('--help')
    assert top.returncode == 0 and 'run' in top.stdout
    run = _cli('run', '--help')
    assert '--span' in run.stdout and 'latest span' in run.stdout
