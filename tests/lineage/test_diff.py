"""`tfx-canary lineage diff A B` between genuinely different runs: another span,
other hyperparameters and train steps, other model code, other metrics.
Synthetic runs in a real SQLite store with real TFMA metrics files
(tests/synthetic_runs.py); no pipeline run."""
import json
import re

import pytest

from modules import hparams
from runners import cli
from tests.synthetic_runs import RunStore

FIRST = {'auc': 0.9495, 'binary_accuracy': 0.8788, 'example_count': 1238.0}
SECOND = {'auc': 0.9408, 'binary_accuracy': 0.8833, 'example_count': 1217.0}
FIRST_ON_SPAN_2 = {'auc': 0.9416, 'binary_accuracy': 0.8694, 'example_count': 1217.0}
THIRD = {'auc': 0.9561, 'binary_accuracy': 0.8910, 'example_count': 1260.0}
CASH = (('payment_type', 'Cash'),)
CODE_V1, CODE_V2 = 'aaaa1111aaaa1111', 'bbbb2222bbbb2222'   # module_fingerprint
RETUNED = {'learning_rate': 0.01, 'hidden_units': [128, 64]}


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """v1: span 1, default hparams, 200 steps, code v1. v2: span 2, retuned, 300
    steps, code v2, judged against v1. v3: span 3, same code and settings as v2."""
    runs = RunStore(tmp_path_factory.mktemp('diff'))
    first = runs.add(FIRST, slices={CASH: {'auc': 0.91, 'example_count': 400.0}},
                     hparams={}, module_fingerprint=CODE_V1, train_steps=200, blessed=True)
    second = runs.add(SECOND, FIRST_ON_SPAN_2,
                      slices={CASH: {'auc': 0.93, 'example_count': 390.0}},
                      baseline_slices={CASH: {'auc': 0.92, 'example_count': 390.0}},
                      hparams=RETUNED, module_fingerprint=CODE_V2, train_steps=300, blessed=True)
    third = runs.add(THIRD, FIRST_ON_SPAN_2, hparams=RETUNED, module_fingerprint=CODE_V2,
                     train_steps=300, blessed=True)
    assert (first.version, second.version, third.version) == (1, 2, 3)
    return runs


def diff(capfd, store, a, b, *flags):
    code = cli.main(['lineage', 'diff', str(a), str(b), '--metadata-path', store.path, *flags])
    out, err = capfd.readouterr()
    assert code == 0, err
    return json.loads(out) if '--json' in flags else out


def table(text):
    """{row label: [a, b(, 'changed')]} of the side-by-side table."""
    rows = {}
    for line in text.split('\n\n')[1].splitlines()[1:]:
        label, *cells = re.split(r'\s{2,}', line.strip())
        rows[label] = cells
    return rows


def metric_lines(text, heading):
    """{metric: [a, b, delta]} of the overall block under `heading`."""
    block = text.split(heading, 1)[1].split('\n\n')[0].splitlines()
    return {line.split()[0]: line.split()[1:] for line in block[2:]
            if line.startswith('    ')}


def test_json_reports_span_code_settings_and_metrics_that_changed(capfd, store):
    record = diff(capfd, store, 1, 2, '--json')
    assert (record['a']['version'], record['b']['version']) == (1, 2)
    data = record['data']
    assert data['span'] == {'a': '1', 'b': '2', 'changed': True}
    assert data['spans'] == {'a': [1], 'b': [2], 'changed': True}
    assert data['examples_id']['changed'] and data['input_fingerprint']['changed']

    training = record['training']
    assert training['module_fingerprint'] == {'a': CODE_V1, 'b': CODE_V2, 'changed': True}
    assert training['train_steps'] == {'a': 200, 'b': 300, 'changed': True}
    assert training['eval_steps'] == {'a': 50, 'b': 50, 'changed': False}
    assert not training['run_fn']['changed'] and not training['preprocessing_fn']['changed']
    assert training['base_model_version'] == {'a': None, 'b': 1, 'changed': True}
    assert training['custom_config'] == [{'name': 'hidden_units', 'a': None, 'b': [128, 64]},
                                         {'name': 'learning_rate', 'a': None, 'b': 0.01}]
    rows = {r['name']: (r['a'], r['b'], r['changed']) for r in training['hyperparameters']}
    defaults = hparams.DEFAULT_HPARAMS
    assert rows == {name: (value, RETUNED.get(name, value), name in RETUNED)
                    for name, value in defaults.items()}

    evaluation = record['evaluation']
    assert evaluation['blessed'] == {'a': True, 'b': True, 'changed': False}
    assert evaluation['baseline_version'] == {'a': None, 'b': 1, 'changed': True}
    slices = {s['slice']: s['metrics'] for s in evaluation['slices']}
    assert set(slices) == {'overall', 'payment_type=Cash'}
    for name in FIRST:
        assert slices['overall'][name] == {'a': FIRST[name], 'b': SECOND[name],
                                           'delta': pytest.approx(SECOND[name] - FIRST[name])}
    assert slices['payment_type=Cash']['auc'] == {'a': 0.91, 'b': 0.93,
                                                  'delta': pytest.approx(0.02)}
    # v2 was judged against v1 on span 2's eval split: the fair comparison.
    head = evaluation['head_to_head']
    assert (head['evaluated_in'], head['baseline'], head['span']) == ('v2', 'v1', '2')
    overall = {s['slice']: s['metrics'] for s in head['slices']}['overall']
    assert overall['auc'] == {'a': FIRST_ON_SPAN_2['auc'], 'b': SECOND['auc'],
                              'delta': pytest.approx(SECOND['auc'] - FIRST_ON_SPAN_2['auc'])}


def test_table_marks_what_changed_and_only_that(capfd, store):
    text = diff(capfd, store, 1, 2)
    rows = table(text)
    assert rows['span'] == ['1', '2', 'changed']
    assert rows['module source hash'] == [CODE_V1, CODE_V2, 'changed']
    assert rows['train steps'] == ['200', '300', 'changed']
    assert rows['eval steps'] == ['50', '50']
    assert rows['hparam learning_rate'] == ['0.005', '0.01', 'changed']
    assert rows['hparam hidden_units'] == ['[64, 32]', '[128, 64]', 'changed']
    assert rows['hparam seed'] == ['42', '42'] and rows['hparam batch_size'] == ['128', '128']
    assert rows['custom_config learning_rate'] == ['null', '0.01', 'changed']
    assert rows['warm start from'] == ['-', 'v1', 'changed']
    assert rows['baseline'] == ['none', 'v1', 'changed']
    assert rows['blessed'] == ['yes', 'yes']
    assert metric_lines(text, 'Metrics (')['auc'] == ['0.9495', '0.9408', '-0.0087']
    assert metric_lines(text, 'Head to head')['auc'] == ['0.9416', '0.9408', '-0.0008']


def test_same_code_and_settings_differ_only_in_data_and_metrics(capfd, store):
    record = diff(capfd, store, 2, 3, '--json')
    training = record['training']
    assert training['module_fingerprint'] == {'a': CODE_V2, 'b': CODE_V2, 'changed': False}
    assert not training['train_steps']['changed'] and training['custom_config'] == []
    assert not any(r['changed'] for r in training['hyperparameters'])
    assert record['data']['span'] == {'a': '2', 'b': '3', 'changed': True}
    overall = {s['slice']: s['metrics'] for s in record['evaluation']['slices']}['overall']
    assert overall['auc']['delta'] == pytest.approx(THIRD['auc'] - SECOND['auc'])
    rows = table(diff(capfd, store, 2, 3))
    assert rows['module source hash'] == [CODE_V2, CODE_V2]
    assert rows['train steps'] == ['300', '300'] and rows['span'] == ['2', '3', 'changed']
    assert not any(label.startswith('custom_config') for label in rows)
