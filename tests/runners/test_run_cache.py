"""runners/run_cache.py: `tfx-canary run` with nothing changed answers from the last
run's record, and anything that would change a real re-run's result is noticed.

No pipeline run: a real SQLite ML Metadata store with two runs
(tests/synthetic_runs.py), a serving root with a stable v1 and a canary v2,
copies of the bundled span files and schema, and a model-code package of the
test's own (so editing it is safe).
"""
import argparse
import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.configs import BUNDLED_DATA_ROOT
from rollout import control
from runners import cli, local_runner, run_cache, summary
from tests.synthetic_runs import MODEL, RunStore
from tests.test_light_commands import _fake_saved_model, heavy_import_chain

FIRST = {'auc': 0.90, 'binary_accuracy': 0.80, 'example_count': 100.0}
SECOND = {'auc': 0.91, 'binary_accuracy': 0.81, 'example_count': 100.0}


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A workspace two runs left (v1 stable, v2 canary), its data and model code."""
    data = tmp_path / 'data'
    for span in (1, 2):
        shutil.copytree(os.path.join(BUNDLED_DATA_ROOT, 'span-%d' % span), data / ('span-%d' % span))
    shutil.copy(os.path.join(BUNDLED_DATA_ROOT, 'schema.pbtxt'), data / 'schema.pbtxt')
    code = tmp_path / 'code' / 'cache_test_models'
    code.mkdir(parents=True)
    (code / '__init__.py').write_text('')
    (code / 'model.py').write_text('LEARNING_RATE = 0.01\n')
    monkeypatch.syspath_prepend(str(tmp_path / 'code'))
    ws = tmp_path / 'workspace'
    runs = RunStore(ws)
    done = [runs.add(FIRST, blessed=True), runs.add(SECOND, FIRST, blessed=True)]
    controller = control.RolloutController(str(ws / 'serving'), MODEL)
    controller.stage(_fake_saved_model(str(tmp_path / 'exports' / 'm1'), 'm1'))
    controller.stage(_fake_saved_model(str(tmp_path / 'exports' / 'm2'), 'm2'), canary_percent=10)
    flags = ['--workspace', str(ws), '--data-root', str(data), '--schema', str(data / 'schema.pbtxt')]
    return dict(ws=ws, data=data, code=code, runs=runs, done=done, controller=controller,
                flags=flags)


def _preflighted(place, *extra):
    """What `tfx-canary run FLAGS EXTRA` would run, checked, with the test's model code."""
    parser = argparse.ArgumentParser()
    cli._add_run(parser.add_subparsers(dest='command'))   # pylint: disable=protected-access
    configs = cli.run_configs(parser.parse_args(['run'] + place['flags'] + list(extra)))
    return [local_runner.preflight(dataclasses.replace(c, module_path='cache_test_models'))
            for c in configs]


def _record(place, *extra, started_with=None):
    """Records the invocation as if it had just run; returns its summaries."""
    runs = _preflighted(place, *extra)
    summaries = [summary.summarize(place['runs'].connection_config(), config, run.run_id, 12.5)
                 for (config, _), run in zip(runs, place['done'][-len(runs):])]
    if started_with is None:
        started_with = [run_cache.stable_identity(config) for config, _ in runs]
    recorded = run_cache.record(runs, summaries, started_with)
    return recorded, summaries


def test_unchanged_invocation_answers_with_the_recorded_summaries(place):
    recorded, summaries = _record(place)
    assert recorded
    cached = run_cache.lookup(_preflighted(place))
    assert cached is not None and cached.summaries == summaries
    assert summaries[0].pushed_destination and summaries[0].metrics['auc'] == pytest.approx(0.91)


def _append_row(place):
    csv = place['data'] / 'span-2' / 'data.csv'
    lines = csv.read_text().splitlines()
    csv.write_text('\n'.join(lines + [lines[-1]]) + '\n')


def _new_span(place):
    shutil.copytree(place['data'] / 'span-2', place['data'] / 'span-3')


CHANGES = {
    'a span file changed': _append_row,
    'a new latest span': _new_span,
    'the schema changed': lambda p: (p['data'] / 'schema.pbtxt').write_text(
        (p['data'] / 'schema.pbtxt').read_text() + '\n# edited\n'),
    'the model code changed': lambda p: (p['code'] / 'model.py').write_text('LEARNING_RATE = 0.02\n'),
    'the canary was promoted': lambda p: p['controller'].promote(reason='test'),
    'the canary was rolled back': lambda p: p['controller'].rollback(reason='test'),
    'the traffic split changed': lambda p: p['controller'].set_traffic(50, reason='test'),
    'rollout.json was damaged': lambda p: (p['ws'] / 'serving' / MODEL / 'rollout.json').write_text('{'),
    'the store was deleted': lambda p: os.remove(p['ws'] / 'metadata.sqlite'),
    'another run was recorded': lambda p: p['runs'].add(SECOND, FIRST, blessed=False),
}


@pytest.mark.parametrize('change', CHANGES.values(), ids=CHANGES.keys())
def test_any_change_takes_the_normal_path(place, change):
    assert _record(place)[0]
    change(place)
    assert run_cache.lookup(_preflighted(place)) is None


@pytest.mark.parametrize('flags', [['--train-steps', '300'], ['--allow-drift', 'fare'],
                                   ['--span', '1'], ['--no-cache']], ids=' '.join)
def test_other_flags_take_the_normal_path(place, flags):
    assert _record(place)[0]
    assert run_cache.lookup(_preflighted(place, *flags)) is None


def test_a_run_that_moved_the_stable_version_is_not_recorded(place):
    """A first model becomes stable during its run: repeating it would judge it
    against itself, so no record (and an older one is forgotten)."""
    assert _record(place)[0]
    recorded, _ = _record(place, started_with=[[0, None]])
    assert not recorded
    assert not os.path.exists(place['ws'] / run_cache.RECORD_FILE)
    assert run_cache.lookup(_preflighted(place)) is None


def test_cached_run_prints_the_summary_without_importing_tensorflow(place, tmp_path):
    """The real command in a subprocess: the recorded summary, said to be cached, exit 0."""
    _, summaries = _record(place)
    # The CLI's config uses the bundled modules/; record with that one for this test.
    runs = [(dataclasses.replace(c, module_path='modules'), f) for c, f in _preflighted(place)]
    run_cache.record(runs, summaries, [run_cache.stable_identity(c) for c, _ in runs])
    process = subprocess.run(
        [sys.executable, '-X', 'importtime', '-m', 'runners.cli', 'run'] + place['flags'],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    lines = process.stdout.splitlines()
    assert lines[0].startswith('Running tfx-canary-taxi on span 2 (span-2/data.csv)')
    assert lines[1].startswith('nothing changed (cached)')
    expected = summaries[0].format().splitlines()
    assert lines[2:-1] == expected[:-1] and lines[-1].startswith('  wall time')
    assert heavy_import_chain(process.stderr) is None, heavy_import_chain(process.stderr)


# ---- already_serving: a run whose model is staged now is not retrained

def _produced(place, version, *extra, module_path='cache_test_models'):
    """Records that `run FLAGS EXTRA` staged `version`; returns (config, files, summary)."""
    from rollout import staging
    (config, files), = [(dataclasses.replace(c, module_path=module_path), f)
                        for c, f in _preflighted(place, *extra)]
    made = summary.summarize(place['runs'].connection_config(), config,
                             place['done'][version - 1].run_id, 12.5)
    made = dataclasses.replace(made, pushed=True, pushed_version=version,
                               pushed_destination=staging.version_dir(
                                   config.serving_root, config.model_name, version))
    assert run_cache.record_produced(config, files, made)
    return config, files, made


def test_a_run_whose_model_serves_as_canary_or_stable_is_not_retrained(place):
    config, files, made = _produced(place, 2)
    serving = run_cache.already_serving(config, files)
    assert (serving.version, serving.role, serving.summary) == (2, 'canary', made)
    place['controller'].promote(reason='test')
    assert run_cache.already_serving(config, files).role == 'stable'


def test_the_first_model_once_stable_is_not_retrained_against_itself(place):
    """The repeated `make run`: span 1 staged v1, which is stable now."""
    config, files, _ = _produced(place, 1, '--span', '1')
    serving = run_cache.already_serving(config, files)
    assert (serving.version, serving.role) == (1, 'stable')
    # Span 2's run is another key: it is not answered by span 1's model.
    (span_2, span_2_files), = _preflighted(place, '--span', '2')
    assert run_cache.already_serving(span_2, span_2_files) is None


def test_a_second_writer_waits_for_the_first_and_both_entries_stay(place):
    """Two runs finishing together: the record is read and rewritten under a lock."""
    import threading

    from rollout import fsutil
    span_1 = _produced(place, 1, '--span', '1')
    done = []
    with fsutil.file_lock(os.path.join(place['ws'], run_cache.PRODUCED_LOCK)):
        writer = threading.Thread(target=lambda: done.append(_produced(place, 2)))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not done   # Waiting for the lock's holder.
    writer.join(60)
    assert done
    assert run_cache.already_serving(*span_1[:2]).version == 1
    assert run_cache.already_serving(*done[0][:2]).version == 2


def _replace_staged_files(place):
    from rollout import staging
    model_dir = staging.version_dir(str(place['ws'] / 'serving'), MODEL, 2)
    for name in staging.IDENTITY_FILES:
        if os.path.isfile(os.path.join(model_dir, name)):
            with open(os.path.join(model_dir, name), 'ab') as f:
                f.write(b'another export')


NOT_SERVING = {
    'the canary was rolled back': lambda p: p['controller'].rollback(reason='test'),
    'its staged files changed': _replace_staged_files,
    'a span file changed': _append_row,
    'the schema changed': CHANGES['the schema changed'],
    'the model code changed': CHANGES['the model code changed'],
    'rollout.json was damaged': CHANGES['rollout.json was damaged'],
    'the record was damaged': lambda p: (p['ws'] / run_cache.PRODUCED_FILE).write_text('{"runs": '),
}


@pytest.mark.parametrize('change', NOT_SERVING.values(), ids=NOT_SERVING.keys())
def test_anything_else_retrains(place, change):
    config, files, _ = _produced(place, 2)
    change(place)
    (config, files), = [(dataclasses.replace(c, module_path='cache_test_models'), f)
                        for c, f in _preflighted(place)]
    assert run_cache.already_serving(config, files) is None


def test_other_flags_and_no_cache_retrain(place):
    _produced(place, 2)
    for flags in (['--train-steps', '300'], ['--no-cache']):
        (config, files), = [(dataclasses.replace(c, module_path='cache_test_models'), f)
                            for c, f in _preflighted(place, *flags)]
        assert run_cache.already_serving(config, files) is None, flags


def test_the_command_says_so_and_runs_nothing(place, monkeypatch, capsys):
    _, _, made = _produced(place, 2, module_path='modules')   # What the CLI's config uses.

    def no_pipeline(*_):
        raise AssertionError('the pipeline ran')
    monkeypatch.setattr(local_runner, 'run', no_pipeline)
    assert cli.main(['run'] + place['flags']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith('already serving: the same data, schema, code and flags produced '
                               'v2 (') and lines[1].endswith('which serves as canary with the same '
                                                            'files; not retrained (--no-cache retrains)')
    assert lines[2:-1] == made.format().splitlines()[:-1]
    # Nothing changed since: the invocation is now a fixed point, recorded for the next one.
    assert os.path.isfile(place['ws'] / run_cache.RECORD_FILE)
