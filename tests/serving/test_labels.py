"""The label log and `tfx-canary capture label` (bulk labels from a CSV; no server)."""
import json
import os

import pytest

from serving import capture, labels
from tests.conftest import SCHEMA_PATH, run_cli_quietly, one_error_line

SPEC = labels.label_spec_from_schema(SCHEMA_PATH)
HEADER = capture.header_from_schema(SCHEMA_PATH)


def _captured(capture_dir, request_ids):
    """A published capture part with one row per request id (as `serve` writes it)."""
    sink = capture.CsvFileSink(str(capture_dir), 1, HEADER)
    sink.write([capture.CaptureRecord({'fare': 7.5}, rid, 0, 1.7e9, 'taxi', 1, 'stable', 0.5,
                                      0.25) for rid in request_ids])
    sink.close()


def _labels_csv(path, lines, header='request_id,row,tips'):
    path.write_text('\n'.join([header] + lines) + '\n')
    return str(path)


def _log(capture_dir):
    return labels.read_jsonl(os.path.join(str(capture_dir), labels.LABEL_LOG))


def test_the_label_column_and_its_type_come_from_the_schema(tmp_path):
    # tips: FLOAT, float_domain min 0, not_in_environment SERVING.
    assert SPEC == labels.LabelSpec('tips', 'FLOAT', 0.0, None)
    no_label = tmp_path / 'schema.pbtxt'
    no_label.write_text('feature { name: "fare" type: FLOAT }\n')
    with pytest.raises(labels.LabelError, match='not_in_environment: "SERVING"'):
        labels.label_spec_from_schema(str(no_label))


def test_bulk_labels_are_appended_and_counted(tmp_path):
    capture_dir = tmp_path / 'capture'
    _captured(capture_dir, ['r1', 'r2', 'r3'])
    first = _labels_csv(tmp_path / 'day1.csv', ['r1,0,3.5', 'r2,0,0', 'ghost,0,1.25'])
    code, out = run_cli_quietly(['capture', 'label', '--labels', first,
                                 '--capture-dir', str(capture_dir)])
    assert code == 0
    assert '3 labels' in out and '2 accepted, 1 unknown' in out and '0 duplicate' in out
    # A later delivery repeats r1 with another value: the first one wins.
    second = _labels_csv(tmp_path / 'day2.csv', ['r1,0,9.0', 'r3,0,12.25'])
    code, out = run_cli_quietly(['capture', 'label', '--labels', second,
                                 '--capture-dir', str(capture_dir)])
    assert code == 0 and '1 accepted, 0 unknown' in out and '1 duplicate' in out
    log = _log(capture_dir)
    assert [(e['request_id'], e['value'], e.get('duplicate', False)) for e in log] == [
        ('r1', 3.5, False), ('r2', 0.0, False), ('ghost', 1.25, False), ('r1', 9.0, True),
        ('r3', 12.25, False)]
    assert log[0]['source'] == 'file:%s' % first and log[2]['known'] is False
    first_wins, duplicates = labels.first_labels(str(capture_dir))
    assert first_wins == {('r1', 0): 3.5, ('r2', 0): 0.0, ('ghost', 0): 1.25,
                          ('r3', 0): 12.25}
    assert duplicates == 1


@pytest.mark.parametrize('lines, header, fragment', [
    (['r1,0,3.5', 'r2,0,lots'], None, "line 3: tips must be a number (as in the training "
                                       "CSV), got 'lots'"),
    (['r1,0,-2'], None, "line 2: tips is -2.0, below the schema's minimum 0.0"),
    (['r1,zero,1'], None, 'line 2: row must be'),
    (['r1,0,1,extra'], None, 'line 2: expected 3 fields'),
    (['r1,0,1'], 'request_id,row,tip', 'the header must be request_id,row,tips'),
    ([], None, 'has no labels'),
])
def test_a_bad_labels_file_is_one_error_line_and_writes_nothing(tmp_path, capsys, lines,
                                                                header, fragment):
    capture_dir = tmp_path / 'capture'
    _captured(capture_dir, ['r1'])
    path = _labels_csv(tmp_path / 'labels.csv', lines, header or 'request_id,row,tips')
    code, out = run_cli_quietly(['capture', 'label', '--labels', path,
                                 '--capture-dir', str(capture_dir)])
    line = one_error_line(code, out, capsys.readouterr().err)
    assert fragment in line and ('labels.csv' in line)
    assert not os.path.exists(capture_dir / labels.LABEL_LOG)


def test_a_torn_line_from_a_crash_is_cut_and_acknowledged_lines_kept(tmp_path):
    log = labels.LabelLog(str(tmp_path), SPEC, labels.CapturedIndex())
    log.append([labels.Label('a', 0, 1.0)], 'feedback')
    # A writer killed mid-write leaves half a line (never acknowledged).
    with open(log.path, 'a') as f:
        f.write('{"request_id": "b", "row": 0, "va')
    assert [e['request_id'] for e in _log(tmp_path)] == ['a']
    # Another writer (a fresh process: `capture label`) appends after cutting it.
    other = labels.LabelLog(str(tmp_path), SPEC, labels.CapturedIndex())
    result = other.append([labels.Label('a', 0, 5.0), labels.Label('c', 0, 2.0)], 'file:x')
    assert result == labels.AppendResult(accepted=0, unknown=1, duplicate=1)
    with open(log.path) as f:
        assert all(json.loads(line) for line in f)  # every line whole again
    # The first writer sees what the second wrote before its next append.
    assert log.append([labels.Label('c', 0, 3.0)], 'feedback').duplicate == 1
    assert labels.first_labels(str(tmp_path))[0] == {('a', 0): 1.0, ('c', 0): 2.0}
