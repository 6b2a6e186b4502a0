"""The drift gate in the real pipeline (marked e2e; shares the session's span 1 -> span 2 runs).

Story: the first model has nothing to drift from; the bundled span 2 is
compared with span 1 (what stable v1 learned from) and passes; a span whose
trip_miles were rescaled, or whose payment types all changed, is stopped
before Transform with one line per drifted feature, nothing trained or
pushed, nothing changed under the serving root.
"""
import csv
import os

import pytest

from components.drift_gate import executor as gate_executor
from rollout import training_data
from runners import cli
from tests.conftest import DATA_ROOT, readonly_store as _store

pytestmark = pytest.mark.e2e
MODEL = 'taxi'
TRAINER = 'tfx.components.trainer.component.Trainer'
TRANSFORM = 'tfx.components.transform.component.Transform'


def _drift_outputs(ws):
    """The DriftGate outputs of the workspace's runs, oldest first."""
    store = _store(ws)
    return sorted(store.get_artifacts_by_type('ExampleAnomalies'), key=lambda a: a.id)


def _gate_outputs(ws):
    return [a for a in _drift_outputs(ws) if gate_executor.DRIFT_CHECKED in a.custom_properties]


def _tree(root):
    snap = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), 'rb') as f:
                snap[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return snap


def test_first_model_is_not_compared_and_span_2_is_compared_with_span_1(pipeline_workspace):
    ws = pipeline_workspace['path']
    assert [code for code, _ in pipeline_workspace['runs']] == [0, 0]
    first, second = _gate_outputs(ws)[:2]
    props = lambda a: {k: (v.int_value if v.HasField('int_value') else v.string_value)
                       for k, v in a.custom_properties.items()}
    assert props(first)[gate_executor.DRIFT_CHECKED] == 0
    assert 'nothing serves yet' in props(first)[gate_executor.DRIFT_NOTE]
    p = props(second)
    assert p[gate_executor.DRIFT_CHECKED] == 1 and p[gate_executor.DRIFTED_FEATURES] == ''
    assert p[gate_executor.DRIFT_SPAN] == 'span 2'
    assert p[gate_executor.DRIFT_BASELINE] == 'span 1, the data stable v1 was trained on'
    # What stable v1 was trained on is staged beside it, outside its SavedModel folder.
    first_out, second_out = (out for _, out in pipeline_workspace['runs'])
    assert ('  drift          : not checked: nothing serves yet' in first_out)
    assert ('  drift          : span 2 vs. span 1, the data stable v1 was trained on: '
            '6 features within thresholds, closest ' in second_out)
    staged = training_data.read(str(ws / 'serving'), MODEL, 1)
    assert staged.span == 'span 1' and os.path.isfile(staged.statistics_file('train'))
    assert not os.path.exists(ws / 'serving' / MODEL / '1' / 'training-data')


def _drifted_root(tmp_path, mutate):
    """A data root whose span 2 is the bundled span 2 with one change."""
    with open(os.path.join(DATA_ROOT, 'span-2', 'data.csv'), newline='') as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    for row in rows:
        mutate(row)
    path = tmp_path / 'data' / 'span-2' / 'data.csv'
    os.makedirs(path.parent)
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / 'data'


def _miles_in_feet(row):
    row['trip_miles'] = '%g' % (float(row['trip_miles']) * 5280)


def _all_cash(row):
    row['payment_type'] = 'Cash'


@pytest.mark.parametrize('mutate, feature', [(_miles_in_feet, 'trip_miles'),
                                             (_all_cash, 'payment_type')])
def test_a_drifted_span_stops_before_transform_and_changes_nothing(
        pipeline_workspace, copy_workspace, tmp_path, capsys, mutate, feature):
    ws = copy_workspace
    before = _tree(ws / 'serving')
    store = _store(ws)
    counts = {t: len(store.get_executions_by_type(t)) for t in (TRAINER, TRANSFORM)}
    code = cli.main(['run', '--workspace', str(ws), '--span', '2',
                     '--data-root', str(_drifted_root(tmp_path, mutate))])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith('error: data drift: span 2 is too far from span 1, the data '
                               'stable v1 was trained on; nothing was trained or pushed')
    assert "  feature '%s': " % feature in lines[1] and lines[1].endswith('DRIFTED')
    assert len(lines) == 2          # one line per drifted feature; the others passed
    store = _store(ws)
    assert {t: len(store.get_executions_by_type(t)) for t in (TRAINER, TRANSFORM)} == counts
    assert _tree(ws / 'serving') == before


def test_allow_drift_trains_on_an_expected_change_and_says_so(
        pipeline_workspace, copy_workspace, tmp_path, capsys):
    ws = copy_workspace
    code = cli.main(['run', '--workspace', str(ws), '--span', '2', '--train-steps', '20',
                     '--allow-drift', 'trip_miles',
                     '--data-root', str(_drifted_root(tmp_path, _miles_in_feet))])
    out = capsys.readouterr().out
    assert code == 0, out
    [line] = [l for l in out.splitlines() if l.startswith('  drift ')]
    assert line.startswith('  drift          : span 2 vs. span 1, the data stable v1 was '
                           'trained on: drifted but allowed: trip_miles, closest trip_miles ')
    last = _gate_outputs(ws)[-1]
    assert last.custom_properties[gate_executor.DRIFTED_FEATURES].string_value == 'trip_miles'
