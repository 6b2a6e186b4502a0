"""Fast lineage tests: synthetic stores (bench/lineage_bench.py), no pipeline run."""
import importlib.util
import json
import os

import pytest

from runners import cli
from tests.conftest import PROJECT_ROOT, one_error_line


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        'lineage_bench', os.path.join(PROJECT_ROOT, 'bench', 'lineage_bench.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def lineage(capfd, *args):
    code = cli.main(['lineage', *map(str, args)])
    out, err = capfd.readouterr()
    return code, out, err




@pytest.fixture(scope='module')
def synthetic_store(tmp_path_factory):
    """A SQLite store with 7 synthetic tfx-canary runs (no payload files),
    and a `rollback --to 2` after the fourth, so v2 serves twice."""
    from ml_metadata.metadata_store import metadata_store
    path = str(tmp_path_factory.mktemp('synthetic') / 'metadata.sqlite')
    pipeline = bench.SyntheticPipeline(metadata_store.MetadataStore(bench.sqlite_config(path)))
    for _ in range(4):
        pipeline.add_run()
    pipeline.rollback_to(2)
    for _ in range(3):
        pipeline.add_run()
    return path, pipeline


def test_parse_version():
    from lineage.cli import parse_version
    from lineage.errors import LineageError
    assert parse_version('2') == 2 and parse_version('v12') == 12
    assert parse_version('canary', allow_roles=True) == 'canary'
    for bad in ('0', 'x', '-1', 'canary'):
        with pytest.raises(LineageError):
            parse_version(bad)


def test_fingerprint_cells_show_only_what_differs():
    from lineage.render import _fingerprint_pair
    a = 'split:s,num_files:1,total_bytes:636646,xor_checksum:1'
    b = 'split:s,num_files:1,total_bytes:644628,xor_checksum:1'
    pair = _fingerprint_pair({'a': a, 'b': b, 'changed': True})
    assert (pair['a'], pair['b']) == ('total_bytes:636646', 'total_bytes:644628')


def test_runs_and_show_on_a_synthetic_store(synthetic_store, capfd):
    path, pipeline = synthetic_store
    code, out, err = lineage(capfd, 'runs', '--metadata-path', path, '--json')
    assert code == 0, err
    runs = json.loads(out)['runs']
    assert [r['spans'] for r in runs] == [[n] for n in range(7, 0, -1)]
    # No rollout.json here: the last rollout event in ML Metadata says what serves.
    code, out, err = lineage(capfd, 'show', '--stable', '--metadata-path', path, '--json')
    assert code == 0, err
    record = json.loads(out)
    assert record['pushed_model']['version'] == pipeline.stable
    assert record['served']['source'].startswith('ML Metadata: last rollout event')
    assert record['examples']['splits'] is None and record['warnings']  # Files absent.
    assert record['rollout_events'][0]['event'].startswith('staged_')


def test_span_range_examples(tmp_path, capfd):
    from ml_metadata.metadata_store import metadata_store
    path = str(tmp_path / 'metadata.sqlite')
    pipeline = bench.SyntheticPipeline(metadata_store.MetadataStore(bench.sqlite_config(path)),
                                       seed=1)
    pipeline.add_run()
    pipeline.add_run(span_range=(1, 3))
    code, out, err = lineage(capfd, 'runs', '--metadata-path', path, '--json')
    assert code == 0, err
    assert [r['spans'] for r in json.loads(out)['runs']] == [[1, 2, 3], [1]]
    version = pipeline.version
    code, out, err = lineage(capfd, 'show', '--version', version, '--metadata-path', path)
    assert code == 0 and 'spans 1-3' in out, err


def test_rollout_events_of_a_version_match_a_full_scan(synthetic_store):
    """The filter-query shortcut finds what scanning the whole history finds."""
    import lineage
    from lineage import build, connection
    path, pipeline = synthetic_store
    queries = lineage.open_lineage(connection.sqlite_config(path))
    history = queries.rollout_events('taxi')
    assert {e['event'] for e in history} >= {'staged_stable', 'staged_canary', 'promoted',
                                              'rolled_back'}
    for version in range(1, pipeline.version + 1):
        record = lineage.show(queries, version=version)
        expected = [e['execution_id'] for e in history
                    if e.get('version') == version or build._touches(e, version)]
        assert [e['execution_id'] for e in record['rollout_events']] == expected, version
        assert all(e['linked'] == (e['version'] == version) for e in record['rollout_events'])


def test_models_that_were_not_pushed(tmp_path, capfd):
    from ml_metadata.metadata_store import metadata_store
    path = str(tmp_path / 'metadata.sqlite')
    pipeline = bench.SyntheticPipeline(metadata_store.MetadataStore(bench.sqlite_config(path)))
    pipeline.add_run(blessed=True)
    pipeline.add_run(blessed=False)
    rejected = pipeline.last_model_id
    pipeline.add_run(blessed=True, pusher=False)
    unpushed = pipeline.last_model_id

    code, out, err = lineage(capfd, 'show', '--artifact-id', rejected, '--metadata-path', path,
                             '--json')
    assert code == 0, err
    record = json.loads(out)
    assert record['pushed_model']['pushed'] is False and record['evaluation']['blessed'] is False
    assert record['evaluation']['baseline']['version'] == 1 and record['served'] is None
    code, out, err = lineage(capfd, 'show', '--artifact-id', rejected, '--metadata-path', path)
    assert 'not pushed (not blessed)' in out and 'NOT BLESSED' in out

    # A run that stopped before its pusher: the evaluation is found downstream.
    code, out, err = lineage(capfd, 'show', '--artifact-id', unpushed, '--metadata-path', path,
                             '--json')
    assert code == 0, err
    record = json.loads(out)
    assert record['pushed_model'] is None and record['rollout_events'] == []
    assert record['evaluation']['blessed'] is True
    assert record['evaluation']['baseline']['version'] == 1
    assert record['examples']['span'] == 3


def test_store_from_another_pipeline_and_unknown_version(synthetic_store, capfd):
    path, _ = synthetic_store
    line = one_error_line(*lineage(capfd, 'runs', '--metadata-path', path,
                                   '--pipeline-name', 'fraud-model'))
    assert "no runs of pipeline 'fraud-model'" in line and 'tfx-canary-taxi' in line
    line = one_error_line(*lineage(capfd, 'show', '--version', '99', '--metadata-path', path))
    assert 'no pushed version 99' in line


def test_empty_and_missing_stores(tmp_path, capfd):
    from ml_metadata.metadata_store import metadata_store
    empty = str(tmp_path / 'empty.sqlite')
    metadata_store.MetadataStore(bench.sqlite_config(empty))
    line = one_error_line(*lineage(capfd, 'runs', '--metadata-path', empty))
    assert 'holds no TFX pipeline runs' in line
    from lineage import connection
    with pytest.raises(AttributeError, match='read-only'):
        connection.open_store(connection.sqlite_config(empty)).put_artifacts([])
    line = one_error_line(*lineage(capfd, 'show', '--stable', '--metadata-path',
                                   tmp_path / 'nope.sqlite'))
    assert 'does not exist' in line
    not_mlmd = tmp_path / 'notes.sqlite'
    not_mlmd.write_text('not a database')
    line = one_error_line(*lineage(capfd, 'runs', '--metadata-path', not_mlmd))
    assert 'cannot open SQLite store' in line


def test_connection_flags(capfd, monkeypatch):
    line = one_error_line(*lineage(capfd, 'runs', '--metadata-path', 'x.sqlite',
                                   '--mysql-host', 'db'))
    assert 'pass only one' in line
    monkeypatch.delenv('NO_SUCH_PASSWORD_VAR', raising=False)
    line = one_error_line(*lineage(capfd, 'runs', '--mysql-host', 'db', '--mysql-database',
                                   'mlmd', '--mysql-password-env', 'NO_SUCH_PASSWORD_VAR'))
    assert 'NO_SUCH_PASSWORD_VAR' in line and 'not set' in line
    line = one_error_line(*lineage(capfd, 'runs', '--mysql-host', 'db'))
    assert '--mysql-database is required' in line
    line = one_error_line(*lineage(capfd, 'runs', '--grpc-host', '127.0.0.1',
                                   '--grpc-port', '1'))
    assert 'cannot open MLMD gRPC server 127.0.0.1:1' in line


def test_copy_between_sqlite_stores_answers_the_same(synthetic_store, tmp_path):
    from ml_metadata.metadata_store import metadata_store

    import lineage
    from lineage import connection, store_copy
    path, _ = synthetic_store
    copy = str(tmp_path / 'copy.sqlite')
    store_copy.copy_store(metadata_store.MetadataStore(connection.sqlite_config(path)),
                          metadata_store.MetadataStore(bench.sqlite_config(copy)))

    def answers(store_path):
        queries = lineage.open_lineage(connection.sqlite_config(store_path))
        return [lineage.show(queries, role='stable'), lineage.runs(queries),
                lineage.diff(queries, 1, 'stable')]

    original, copied = answers(path), answers(copy)
    # Ids are re-assigned in the same order, so here even they agree.
    for a, b in zip(original, copied):
        for record in (a, b):
            record.pop('store')
        assert _drop_times(a) == _drop_times(b)


def _drop_times(value):
    if isinstance(value, dict):
        return {k: _drop_times(v) for k, v in value.items()
                if k not in ('created_at', 'started_at', 'finished_at', 'seconds')}
    if isinstance(value, list):
        return [_drop_times(v) for v in value]
    return value


def test_pillow_renderer_without_graphviz(synthetic_store, tmp_path, monkeypatch):
    import lineage
    from lineage import cli as lineage_cli, connection, graph
    path, _ = synthetic_store
    record = lineage.show(lineage.open_lineage(connection.sqlite_config(path)), version=3)
    monkeypatch.setattr(graph, 'graphviz_binary', lambda: None)
    out = tmp_path / 'g.png'
    assert graph.write_png(record, str(out)) == 'pillow'
    width, height = lineage_cli.png_size(out)
    assert width > 200 and height > 400
    with pytest.raises(lineage.errors.LineageError):
        graph.write_png(record, str(out), renderer='graphviz')


def test_bench_runs_and_prints_a_table(tmp_path):
    rows = bench.run_bench([3, 5], 1, str(tmp_path / 'b.sqlite'))
    assert [r['runs'] for r in rows] == [3, 5] and all(r['queries'] > 0 for r in rows)
    table = bench.format_table(rows).splitlines()
    assert table[0].split()[:2] == ['runs', 'versions'] and len(table) == 3


# ------------------------------------------- whose serving state (issue: one workspace)

def _write_rollout_json(serving_root, stable, canary=None, traffic=0, model='taxi'):
    """A valid rollout.json serving `stable` (and `canary`), with no history."""
    from common import locations
    from rollout import state as state_mod
    path = locations.rollout_json_path(str(serving_root), model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state_mod.save_state(path, state_mod.RolloutState(
        model_name=model, stable_version=stable, canary_version=canary,
        canary_traffic_percent=traffic, phase='canary' if canary else 'stable',
        last_version=max(stable, canary or 0)))
    return path


@pytest.fixture
def decoy_cwd(tmp_path, monkeypatch, synthetic_store):
    """The cwd is a folder with its own ./workspace whose rollout.json names another
    stable version than the synthetic store's (as after `make run` in the checkout)."""
    _, pipeline = synthetic_store
    decoy = 1 if pipeline.stable != 1 else 3
    cwd = tmp_path / 'elsewhere'
    cwd.mkdir()
    _write_rollout_json(cwd / 'workspace' / 'serving', decoy)
    monkeypatch.chdir(cwd)
    return decoy


def test_show_with_metadata_path_ignores_the_cwd_workspace(synthetic_store, decoy_cwd, capfd):
    """--metadata-path X reads X's own serving state, never ./workspace/serving."""
    path, pipeline = synthetic_store
    assert decoy_cwd != pipeline.stable
    code, out, err = lineage(capfd, 'show', '--stable', '--metadata-path', path, '--json')
    assert code == 0, err
    record = json.loads(out)
    assert record['pushed_model']['version'] == pipeline.stable
    assert record['served']['source'].startswith('ML Metadata: last rollout event')
    assert record['served']['rollout_json'] is None
    assert 'elsewhere' not in out
    code, out, err = lineage(capfd, 'show', '--stable', '--metadata-path', path)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.strip().startswith('serving state:'))
    assert 'ML Metadata: last rollout event' in line
    assert os.path.join(os.path.dirname(path), 'serving', 'taxi', 'rollout.json') in line
    code, out, err = lineage(capfd, 'runs', '--metadata-path', path, '--json')
    assert code == 0, err
    runs = json.loads(out)
    assert runs['serving_state']['rollout_json'] is None
    assert [r['pushed_version'] for r in runs['runs']
            if r['serving_now'] == 'stable'] == [pipeline.stable]


def test_show_reads_the_rollout_json_next_to_the_store(synthetic_store, decoy_cwd, capfd,
                                                       tmp_path):
    """The layout `run` writes: WORKSPACE/metadata.sqlite beside WORKSPACE/serving."""
    import shutil
    path, pipeline = synthetic_store
    ws = tmp_path / 'other-workspace'
    ws.mkdir()
    shutil.copy(path, ws / 'metadata.sqlite')
    own = 2 if decoy_cwd != 2 else 3
    rollout_json = _write_rollout_json(ws / 'serving', own)
    for flags in (['--metadata-path', ws / 'metadata.sqlite'], ['--workspace', ws]):
        code, out, err = lineage(capfd, 'show', '--stable', *flags, '--json')
        assert code == 0, err
        record = json.loads(out)
        assert record['pushed_model']['version'] == own, flags
        assert record['served']['source'] == rollout_json
        assert record['served']['rollout_json'] == rollout_json
        code, out, err = lineage(capfd, 'runs', *flags)
        assert code == 0, err
        assert 'serving state: %s' % rollout_json in out
    code, out, err = lineage(capfd, 'show', '--stable', '--metadata-path', ws / 'metadata.sqlite')
    assert 'serving state: %s' % rollout_json in out


def test_a_rollout_json_that_does_not_validate_is_not_believed(synthetic_store, capfd,
                                                                tmp_path):
    """An impossible rollout.json (canary == stable) is reported, and MLMD says what serves."""
    import shutil
    path, pipeline = synthetic_store
    ws = tmp_path / 'ws'
    ws.mkdir()
    shutil.copy(path, ws / 'metadata.sqlite')
    other = 2 if pipeline.stable != 2 else 3
    rollout_json = _write_rollout_json(ws / 'serving', other)
    with open(rollout_json) as f:
        broken = json.load(f)
    broken.update(phase='canary', canary_version=other, canary_traffic_percent=10)
    with open(rollout_json, 'w') as f:
        json.dump(broken, f)
    code, out, err = lineage(capfd, 'show', '--stable', '--workspace', ws, '--json')
    assert code == 0, err
    record = json.loads(out)
    assert record['pushed_model']['version'] == pipeline.stable
    assert record['served']['source'].startswith('ML Metadata: last rollout event')
    assert any(w.startswith('cannot read %s' % rollout_json) and 'canary_version equals'
               in w for w in record['warnings']), record['warnings']


def _store_copy_recording(path, target, serving_root):
    """A copy of the store at `path` whose pushes recorded `serving_root` (as CanaryPusher does)."""
    import shutil
    from ml_metadata.metadata_store import metadata_store
    os.makedirs(os.path.dirname(str(target)), exist_ok=True)
    shutil.copy(path, target)
    store = metadata_store.MetadataStore(bench.sqlite_config(str(target)))
    pushes = store.get_artifacts_by_type('PushedModel')
    for artifact in pushes:
        artifact.custom_properties['serving_root'].string_value = str(serving_root)
    store.put_artifacts(pushes)
    return str(target)


def test_show_uses_the_serving_root_the_store_recorded(synthetic_store, decoy_cwd, capfd,
                                                       tmp_path):
    """`run --serving-root /mnt/models`: the store says where its models went."""
    path, _ = synthetic_store
    recorded = tmp_path / 'mnt' / 'models'
    store = _store_copy_recording(path, tmp_path / 'ws' / 'metadata.sqlite', recorded)
    own = 2 if decoy_cwd != 2 else 3
    rollout_json = _write_rollout_json(recorded, own)
    _write_rollout_json(tmp_path / 'ws' / 'serving', 5)   # Stale: not where pushes went.
    code, out, err = lineage(capfd, 'show', '--stable', '--metadata-path', store, '--json')
    assert code == 0, err
    record = json.loads(out)
    assert record['pushed_model']['version'] == own
    assert record['served']['rollout_json'] == rollout_json
    assert record['served']['serving_root_from'].startswith(
        'recorded in ML Metadata by PushedModel #')
    code, out, err = lineage(capfd, 'show', '--stable', '--metadata-path', store)
    assert ('serving state: %s (serving root recorded in ML Metadata by PushedModel #'
            % rollout_json) in out
    # An explicit --workspace (or --serving-root) is what it says.
    code, out, err = lineage(capfd, 'show', '--stable', '--workspace', tmp_path / 'ws', '--json')
    assert code == 0, err
    assert json.loads(out)['pushed_model']['version'] == 5


def test_serving_root_alone_never_reads_another_workspaces_store(synthetic_store, decoy_cwd,
                                                                  capfd, tmp_path):
    """--serving-root S, no store next to S: ./workspace's store is not S's."""
    path, _ = synthetic_store
    _store_copy_recording(path, 'workspace/metadata.sqlite',
                          os.path.abspath('workspace/serving'))
    bare = tmp_path / 'bare' / 'serving'
    _write_rollout_json(bare, 2)
    line = one_error_line(*lineage(capfd, 'show', '--stable', '--serving-root', bare))
    assert '--serving-root %s has no metadata.sqlite next to it' % bare in line
    assert 'is the store of serving root %s' % os.path.abspath('workspace/serving') in line
    # Its own serving root is fine.
    code, out, err = lineage(capfd, 'runs', '--serving-root', 'workspace/serving')
    assert code == 0, err


def test_diff_names_the_serving_state(synthetic_store, decoy_cwd, capfd):
    path, _ = synthetic_store
    code, out, err = lineage(capfd, 'diff', '1', '2', '--metadata-path', path)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith('serving state:'))
    assert os.path.join(os.path.dirname(path), 'serving', 'taxi', 'rollout.json') in line
    code, out, err = lineage(capfd, 'diff', '1', '2', '--metadata-path', path, '--json')
    assert json.loads(out)['serving_state']['serving_root'] == os.path.join(
        os.path.dirname(path), 'serving')
