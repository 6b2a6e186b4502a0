"""`tfx-canary lineage` on the store of two real pipeline runs plus rollout events.

Every test that reads a store runs twice, on the SQLite store and on a copy
of it in a real MariaDB server (read with a SELECT-only user): same
assertions, same answers.
"""
import csv
import hashlib
import json
import os
import re

import pytest

from runners import cli
from tests.conftest import DATA_ROOT, SCHEMA_PATH, one_error_line
from tests.lineage.conftest import MODEL

pytestmark = pytest.mark.e2e

SHOW_KEYS = {'schema_version', 'kind', 'pipeline', 'model_name', 'store', 'served',
             'pushed_model', 'model', 'trainer', 'transform', 'examples', 'statistics',
             'schema', 'anomalies', 'validation_gate', 'drift', 'evaluation', 'rollout_events',
             'warnings', 'capture'}


def lineage(capfd, *args):
    """Runs `tfx-canary lineage ARGS` in-process; (exit code, stdout, stderr)."""
    code = cli.main(['lineage', *map(str, args)])
    out, err = capfd.readouterr()
    return code, out, err


def lineage_json(capfd, *args):
    code, out, err = lineage(capfd, *args, '--json')
    assert code == 0, err
    return json.loads(out)




def _summary_metric(run_output, label, metric):
    """A metric from the pipeline's own run summary, e.g. ('metrics (eval)', 'auc')."""
    line = next(l for l in run_output.splitlines() if l.strip().startswith(label))
    return float(re.search(r'\b%s (\d+\.\d+)' % metric, line).group(1))


def _csv_rows(span):
    with open(os.path.join(DATA_ROOT, 'span-%d' % span, 'data.csv')) as f:
        return sum(1 for _ in csv.DictReader(f))


def _without_ids_and_times(value):
    """A record minus what legitimately differs between two copies of a store."""
    volatile = {'id', 'store', 'created_at', 'started_at', 'finished_at', 'seconds'}
    if isinstance(value, dict):
        return {k: _without_ids_and_times(v) for k, v in value.items()
                if k not in volatile and not k.endswith('_id') and not k.endswith('_ids')}
    if isinstance(value, list):
        return [_without_ids_and_times(v) for v in value]
    return value


# ---------------------------------------------------------------- runs

def test_runs_lists_every_run_newest_first(store_args, capfd, lineage_story):
    record = lineage_json(capfd, 'runs', *store_args())
    runs = record['runs']
    newest, oldest = runs[0], runs[-1]
    assert (newest['spans'], newest['blessed'], newest['pushed_version'],
            newest['serving_now']) == ([2], True, 2, 'canary')
    assert (oldest['spans'], oldest['blessed'], oldest['pushed_version'],
            oldest['serving_now']) == ([1], True, 1, 'stable')
    assert all(r['status'].startswith('complete') for r in runs)
    if lineage_story['retried']:  # The first span-2 retrain, rejected and not pushed.
        assert len(runs) == 3
        assert (runs[1]['spans'], runs[1]['blessed'], runs[1]['pushed_version']) == (
            [2], False, None)
        rejected = lineage_json(capfd, 'show', '--artifact-id', runs[1]['pushed_model_id'],
                                *store_args())
        assert rejected['pushed_model']['pushed'] is False and rejected['served'] is None
        assert rejected['evaluation']['blessed'] is False
        assert rejected['evaluation']['baseline']['version'] == 1
        failures = rejected['evaluation']['validation']['failures']
        assert failures and failures[0].startswith('auc change vs baseline on overall')
    else:
        assert len(runs) == 2

    code, out, _ = lineage(capfd, 'runs', *store_args())
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ['RUN', 'STARTED', 'TIME', 'STATUS']
    assert lines[1].startswith(newest['run']) and 'v2 (canary now)' in lines[1]
    assert lines[len(runs)].startswith(oldest['run']) and 'v1 (stable now)' in lines[len(runs)]

    assert len(lineage_json(capfd, 'runs', '--limit', '1', *store_args())['runs']) == 1


# ---------------------------------------------------------------- show

def test_show_canary_traces_v2_back_to_span_2(store_args, capfd, lineage_story, schema):
    record = lineage_json(capfd, 'show', '--canary', *store_args())
    run2 = lineage_story['canary_run']
    assert record['served'] == {**record['served'], 'version': 2, 'role': 'canary',
                                'traffic_percent': 25, 'stable_version': 1}
    pushed = record['pushed_model']
    assert (pushed['version'], pushed['pushed'], pushed['role_at_push'],
            pushed['challenged_stable_version']) == (2, True, 'canary', 1)
    assert pushed['destination'].endswith(os.path.join('serving', MODEL, '2'))

    examples = record['examples']
    assert (examples['span'], examples['spans'], examples['span_range']) == (2, [2], None)
    assert examples['input_patterns'] == ['span-2/*.csv']
    assert examples['input_fingerprint'].startswith('split:single_split,num_files:1,total_bytes:')
    splits = examples['splits']
    assert splits['train'] + splits['eval'] == _csv_rows(2)  # Every row, split 3:1.
    assert splits['train'] > 2 * splits['eval'] > 0
    assert record['statistics']['splits'] == splits
    assert record['schema']['source_file'] == SCHEMA_PATH
    assert record['schema']['features'] == len(schema.feature)
    assert record['anomalies']['count'] == 0 and record['validation_gate']['passed']
    # The drift gate compared span 2 with what stable v1 learned from, feature by feature.
    drift = record['drift']
    assert drift['passed'] and drift['checked'] and drift['allowed_drift'] == []
    assert (drift['span'], drift['baseline']) == ('span 2',
                                                  'span 1, the data stable v1 was trained on')
    compared = {f['feature']: f for f in drift['features']}
    assert sorted(compared) == sorted(f.name for f in schema.feature
                                      if f.HasField('drift_comparator'))
    assert all(0 <= f['distance'] < f['threshold'] and not f['drifted']
               for f in compared.values())

    trainer = record['trainer']
    from modules.hparams import hparams_from
    retried = lineage_story['retried']
    custom_config = {'learning_rate': 1e-06} if retried else {}
    assert (trainer['train_steps'], trainer['eval_steps'], trainer['run_fn']) == (
        20 if retried else 200, 50, 'modules.model.run_fn')
    # The model package's source hash, recorded by the pipeline in custom_config.
    from pipeline.configs import PipelineConfig
    assert trainer['module_fingerprint']['recorded'] is True
    assert trainer['module_fingerprint']['sha256'] == PipelineConfig().module_fingerprint()
    assert trainer['custom_config'] == custom_config
    assert trainer['hyperparameters'] == hparams_from(custom_config)
    assert trainer['base_model']['version'] == 1  # Warm-started from what served.
    assert record['transform']['preprocessing_fn'] == 'modules.preprocessing.preprocessing_fn'

    evaluation = record['evaluation']
    assert evaluation['blessed'] is True and evaluation['baseline']['version'] == 1
    assert evaluation['validation']['ok'] is True
    kinds = {(t['metric'], t['kind']) for t in evaluation['thresholds']}
    assert {('auc', 'value'), ('auc', 'change vs baseline'), ('binary_accuracy', 'value')} <= kinds
    overall = evaluation['overall']
    assert round(overall['candidate']['auc'], 4) == _summary_metric(run2, 'metrics (eval)', 'auc')
    assert round(overall['baseline']['auc'], 4) == _summary_metric(run2, 'baseline', 'auc')
    assert {s['key'][0][0] for s in evaluation['slices']} == {'payment_type', 'trip_start_hour'}
    assert sum(s['candidate']['example_count'] for s in evaluation['slices']
               if s['key'][0][0] == 'payment_type') == overall['candidate']['example_count']

    events = record['rollout_events']
    assert [(e['event'], e['version'], e['linked']) for e in events] == [
        ('staged_canary', 2, True), ('traffic_changed', 2, True)]
    assert events[1]['reason'] == 'error budget ok' and events[1]['to']['traffic'] == 25

    code, out, _ = lineage(capfd, 'show', '--canary', *store_args())
    assert code == 0
    assert out.startswith('taxi v2: canary, 25% of traffic (stable v1)')
    for text in ('span 2', 'Trainer execution', 'Evaluator execution', 'BLESSED',
                 'DriftGate execution', 'span 2 vs. span 1, the data stable v1 was trained on',
                 'trip_miles: Jensen-Shannon divergence 0.',
                 'payment_type=Credit Card', 'staged_canary', 'traffic_changed',
                 'error budget ok'):
        assert text in out, text


def test_show_stable_traces_v1_back_to_span_1(store_args, capfd, lineage_story):
    record = lineage_json(capfd, 'show', '--stable', *store_args())
    run1 = lineage_story['runs'][0][1]
    assert (record['served']['version'], record['served']['role'],
            record['served']['traffic_percent']) == (1, 'stable', 75)
    assert record['examples']['span'] == 1
    assert record['examples']['splits']['train'] + record['examples']['splits']['eval'] == \
        _csv_rows(1)
    assert record['trainer']['base_model'] is None  # First model: trained from scratch.
    assert record['drift']['checked'] is False and 'nothing serves yet' in record['drift']['note']
    evaluation = record['evaluation']
    assert evaluation['baseline'] is None and evaluation['blessed'] is True
    assert 'change vs baseline' not in {t['kind'] for t in evaluation['thresholds']}
    assert round(evaluation['overall']['candidate']['auc'], 4) == \
        _summary_metric(run1, 'metrics (eval)', 'auc')
    # Its own staging is linked to it; the canary's events moved traffic off it.
    assert [(e['event'], e['linked']) for e in record['rollout_events']
            if e['event'] != 'not_blessed'] == [
        ('staged_stable', True), ('staged_canary', False), ('traffic_changed', False)]

    code, out, _ = lineage(capfd, 'show', '--version', '1', '--no-slices', *store_args())
    assert code == 0 and out.startswith('taxi v1: stable, 75% of traffic (canary v2)')
    assert 'warm start from  nothing (trained from scratch)' in out
    assert 'payment_type=Cash' not in out  # --no-slices


def test_show_after_promote(store_args, capfd):
    record = lineage_json(capfd, 'show', '--stable', *store_args('promoted'))
    assert (record['served']['version'], record['served']['traffic_percent']) == (2, 100)
    assert [e['event'] for e in record['rollout_events']] == [
        'staged_canary', 'traffic_changed', 'promoted']
    assert record['rollout_events'][-1]['reason'] == 'canary healthy for a day'

    old = lineage_json(capfd, 'show', '--version', '1', *store_args('promoted'))
    assert old['served']['role'] == 'not serving'
    assert old['rollout_events'][-1]['event'] == 'promoted'  # What replaced it.

    line = one_error_line(*lineage(capfd, 'show', '--canary', *store_args('promoted')))
    assert 'no canary version now' in line and 'stable is v2' in line


def test_show_by_artifact_id(store_args, capfd):
    record = lineage_json(capfd, 'show', '--canary', *store_args())
    by_model = lineage_json(capfd, 'show', '--artifact-id', record['model']['id'], *store_args())
    by_push = lineage_json(capfd, 'show', '--artifact-id', record['pushed_model']['id'],
                           *store_args())
    assert by_model == by_push == record
    line = one_error_line(*lineage(capfd, 'show', '--artifact-id', record['examples']['id'],
                                   *store_args()))
    assert 'is of type Examples' in line and 'PushedModel' in line


# ---------------------------------------------------------------- diff

def test_diff_reports_the_real_differences(store_args, capfd, lineage_story):
    record = lineage_json(capfd, 'diff', 'stable', 'canary', *store_args())
    assert (record['a']['version'], record['b']['version']) == (1, 2)
    assert (record['a']['served']['role'], record['b']['served']['role']) == ('stable', 'canary')
    data = record['data']
    assert data['span'] == {'a': '1', 'b': '2', 'changed': True}
    assert data['spans'] == {'a': [1], 'b': [2], 'changed': True}
    assert data['input_fingerprint']['changed'] and data['splits']['changed']
    assert data['anomalies'] == {'a': 0, 'b': 0, 'changed': False}
    assert record['schema']['same_artifact'] is True  # One curated schema, imported once.
    training = record['training']
    retried = lineage_story['retried']
    assert training['base_model_version'] == {'a': None, 'b': 1, 'changed': True}
    assert training['train_steps'] == {'a': 200, 'b': 20 if retried else 200,
                                       'changed': retried}
    assert not training['run_fn']['changed'] and not training['eval_steps']['changed']
    changed = {h['name']: (h['a'], h['b']) for h in training['hyperparameters'] if h['changed']}
    if retried:  # The gentle retrain's override, and only that.
        assert changed == {'learning_rate': (0.005, 1e-06)}
        assert training['custom_config'] == [{'name': 'learning_rate', 'a': None, 'b': 1e-06}]
    else:
        assert changed == {} and training['custom_config'] == []
    evaluation = record['evaluation']
    assert evaluation['baseline_version'] == {'a': None, 'b': 1, 'changed': True}
    overall = evaluation['slices'][0]
    assert overall['slice'] == 'overall'
    auc = overall['metrics']['auc']
    assert auc['delta'] == pytest.approx(auc['b'] - auc['a'])
    # Same data: v2's own evaluation, where v1 was the baseline.
    h2h = evaluation['head_to_head']
    run2 = lineage_story['canary_run']
    assert (h2h['evaluated_in'], h2h['baseline'], h2h['span']) == ('v2', 'v1', '2')
    h2h_auc = h2h['slices'][0]['metrics']['auc']
    assert round(h2h_auc['a'], 4) == _summary_metric(run2, 'baseline', 'auc')
    assert round(h2h_auc['b'], 4) == _summary_metric(run2, 'metrics (eval)', 'auc')

    by_number = lineage_json(capfd, 'diff', '1', 'v2', *store_args())
    assert by_number == record

    code, out, _ = lineage(capfd, 'diff', 'stable', 'canary', *store_args())
    assert code == 0
    rows = {line.split('  ')[0]: line for line in out.splitlines()}
    assert rows['span'].split()[1:] == ['1', '2', 'changed']
    assert 'stable, 75% of traffic' in rows['serving']
    assert 'canary, 25% of traffic' in rows['serving']
    assert rows['warm start from'].split()[3:] == ['-', 'v1', 'changed']
    assert rows['hparam learning_rate'].endswith('changed') == retried
    assert 'Head to head on the same data' in out


# ---------------------------------------------------------------- output formats

def test_json_is_stable_and_machine_readable(store_args, capfd):
    first = lineage(capfd, 'show', '--canary', '--json', *store_args())
    second = lineage(capfd, 'show', '--canary', '--json', *store_args())
    assert first == second and first[0] == 0
    record = json.loads(first[1])
    assert set(record) == SHOW_KEYS
    assert record['capture'] is None   # the bundled spans are not exported capture
    assert (record['schema_version'], record['kind']) == (1, 'lineage.show')
    assert first[1] == json.dumps(record, indent=2, sort_keys=True) + '\n'
    for args, kind in ((('runs',), 'lineage.runs'), (('diff', '1', '2'), 'lineage.diff')):
        again = lineage_json(capfd, *args, *store_args())
        assert again['kind'] == kind and again['schema_version'] == 1
        assert again == lineage_json(capfd, *args, *store_args())


@pytest.mark.parametrize('renderer', ['auto', 'pillow', 'graphviz'])
def test_png_is_a_valid_image(store_args, capfd, tmp_path, renderer):
    from lineage import graph
    if renderer == 'graphviz' and graph.graphviz_binary() is None:
        pytest.skip('graphviz `dot` not installed (.ci/run installs it)')
    path = tmp_path / 'lineage.png'
    code, out, err = lineage(capfd, 'show', '--canary', '--png', path, '--renderer', renderer,
                             *store_args())
    assert code == 0, err
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR'
    width, height = int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    assert width >= 300 and height >= 600  # A whole chain, top to bottom.
    assert f'({width}x{height} PNG' in out


def test_dot_names_the_chain(store_args, capfd, tmp_path):
    code, out, _ = lineage(capfd, 'show', '--canary', '--dot', *store_args())
    assert code == 0 and out.startswith('digraph "lineage taxi v2"')
    for text in ('PushedModel #', 'Trainer (execution', 'Examples #', 'span 2', 'canary 25%',
                 'staged_canary', 'traffic_changed', '->'):
        assert text in out, text
    path = tmp_path / 'lineage.dot'
    assert lineage(capfd, 'show', '--canary', '--dot', path, *store_args())[0] == 0
    assert path.read_text() == out


# ---------------------------------------------------------------- bad input

def test_bad_input_is_one_clear_line(store_args, capfd):
    line = one_error_line(*lineage(capfd, 'show', '--version', '9', *store_args()))
    assert 'no pushed version 9' in line and 'pushed versions: 1, 2' in line
    line = one_error_line(*lineage(capfd, 'runs', *store_args(), '--pipeline-name', 'other'))
    assert "no runs of pipeline 'other'" in line and 'tfx-canary-taxi' in line
    line = one_error_line(*lineage(capfd, 'diff', '1', 'latest', *store_args()))
    assert "got 'latest'" in line


def test_unreachable_or_wrong_databases(capfd, mariadb, mariadb_scenarios, tmp_path,
                                        monkeypatch):
    args = mariadb.cli_args(mariadb_scenarios['canary25'])
    closed = list(args)
    closed[closed.index('--mysql-port') + 1] = '1'
    line = one_error_line(*lineage(capfd, 'runs', *closed))
    assert "cannot open MySQL database 'lineage_canary25' at 127.0.0.1:1" in line
    assert 'nothing answers at 127.0.0.1:1' in line
    monkeypatch.setenv('TFX_CANARY_TEST_MYSQL_PASSWORD', 'wrong')
    line = one_error_line(*lineage(capfd, 'runs', *args))
    assert 'refused the login' in line and '--mysql-password-env' in line
    monkeypatch.undo()
    missing = list(args)
    missing[missing.index('--mysql-database') + 1] = 'no_such_db'
    line = one_error_line(*lineage(capfd, 'runs', *missing))
    assert 'no_such_db' in line
    line = one_error_line(*lineage(capfd, 'runs', '--grpc-host', '127.0.0.1',
                                   '--grpc-port', '1'))
    assert 'MLMD gRPC server 127.0.0.1:1' in line


def test_empty_mariadb_store(capfd, mariadb):
    from ml_metadata.metadata_store import metadata_store
    metadata_store.MetadataStore(mariadb.connection_config('lineage_empty', read_only=False))
    line = one_error_line(*lineage(capfd, 'runs', *mariadb.cli_args('lineage_empty')))
    assert 'holds no TFX pipeline runs' in line


# ---------------------------------------------------------------- both backends

def test_sqlite_and_mariadb_give_the_same_answers(capfd, scenario_workspaces, mariadb,
                                                  mariadb_scenarios):
    for scenario, ws in scenario_workspaces.items():
        common = ['--serving-root', ws / 'serving']
        sqlite = ['--metadata-path', ws / 'metadata.sqlite'] + common
        maria = mariadb.cli_args(mariadb_scenarios[scenario]) + common
        for args in (['runs'], ['show', '--stable'], ['show', '--version', '2'],
                     ['show', '--version', '1'], ['diff', '1', '2']):
            a = lineage_json(capfd, *args, *sqlite)
            b = lineage_json(capfd, *args, *maria)
            assert _without_ids_and_times(a) == _without_ids_and_times(b), (scenario, args)


def test_copy_preserves_the_store_structure(scenario_workspaces, mariadb):
    from ml_metadata.metadata_store import metadata_store

    from lineage import connection
    from tests.lineage.conftest import copy_sqlite_to_mariadb
    ws = scenario_workspaces['canary25']
    maps = copy_sqlite_to_mariadb(ws / 'metadata.sqlite', mariadb, 'lineage_copy_check')
    source = metadata_store.MetadataStore(connection.sqlite_config(ws / 'metadata.sqlite'))
    target = metadata_store.MetadataStore(mariadb.connection_config('lineage_copy_check'))

    def events(store, amap=None, emap=None):
        return sorted((emap[e.execution_id] if emap else e.execution_id,
                       amap[e.artifact_id] if amap else e.artifact_id, e.type,
                       e.path.SerializeToString(deterministic=True))
                      for e in store.get_events_by_execution_ids(
                          [x.id for x in store.get_executions()]))
    assert events(source, maps.artifacts, maps.executions) == events(target)
    for context in source.get_contexts():
        new_id = maps.contexts[context.id]
        assert target.get_contexts_by_id([new_id])[0].name == context.name
        assert sorted(maps.artifacts[a.id] for a in source.get_artifacts_by_context(context.id)) \
            == sorted(a.id for a in target.get_artifacts_by_context(new_id))
        assert sorted(maps.executions[e.id] for e in source.get_executions_by_context(
            context.id)) == sorted(e.id for e in target.get_executions_by_context(new_id))
        assert [maps.contexts[p.id] for p in source.get_parent_contexts_by_context(context.id)] \
            == [p.id for p in target.get_parent_contexts_by_context(new_id)]
    for old_id, new_id in maps.artifacts.items():
        old, new = source.get_artifacts_by_id([old_id])[0], target.get_artifacts_by_id([new_id])[0]
        assert (old.uri, old.type, dict(old.custom_properties), dict(old.properties)) == \
            (new.uri, new.type, dict(new.custom_properties), dict(new.properties))


def test_the_cli_never_writes_to_the_sqlite_store(capfd, scenario_workspaces):
    ws = scenario_workspaces['canary25']
    path = ws / 'metadata.sqlite'

    def snapshot():
        with open(path, 'rb') as f:
            return (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns,
                    sorted(os.listdir(ws)))
    before = snapshot()
    args = ['--metadata-path', path, '--serving-root', ws / 'serving']
    for command in (['runs'], ['show', '--canary'], ['diff', '1', '2'],
                    ['show', '--version', '9']):
        lineage(capfd, *command, *args)
    assert snapshot() == before
