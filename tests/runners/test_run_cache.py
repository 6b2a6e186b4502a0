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
