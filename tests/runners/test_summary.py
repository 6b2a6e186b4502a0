"""runners/summary.py: what `tfx-canary run` prints after each run, read back
from a real SQLite ML Metadata store holding several synthetic runs
(tests/synthetic_runs.py), each with real TFMA metrics files."""
import dataclasses

import pytest

from pipeline.configs import PipelineConfig
from runners import cli, summary
from tests.synthetic_runs import MODEL, RunStore

SECONDS = 41.26
# What the Evaluator measured, per run (overall slice).
FIRST = {'auc': 0.9495, 'binary_accuracy': 0.8788, 'example_count': 1238.0}
SECOND = {'auc': 0.9408, 'binary_accuracy': 0.8833, 'example_count': 1217.0}
FIRST_ON_SPAN_2 = {'auc': 0.9416, 'binary_accuracy': 0.8694, 'example_count': 1217.0}
WEAK = {'auc': 0.6012, 'binary_accuracy': 0.5530, 'example_count': 1250.0}
RANGE = {'auc': 0.9512, 'binary_accuracy': 0.8901, 'example_count': 3704.0}
# A slice whose numbers must never be taken for the overall ones.
CASH = {(('payment_type', 'Cash'),): {'auc': 0.5, 'binary_accuracy': 0.97, 'example_count': 400.0}}
STALE_REASON = ('stable version 1 it was judged against is no longer the stable version '
                '(now 2): re-run the pipeline to judge it against the new stable')


@pytest.fixture(scope='module')
def story(tmp_path_factory):
    """Five runs in one store: first model, a retrain judged against it, a
    rejected model, a blessed model refused at push, a span-range run."""
    runs = RunStore(tmp_path_factory.mktemp('summary'))
    story = {
        'first': runs.add(FIRST, slices=CASH, blessed=True),
        'retrain': runs.add(SECOND, FIRST_ON_SPAN_2, slices=CASH, baseline_slices=CASH,
                            blessed=True),
    }
    story['rejected'] = runs.add(WEAK, {**FIRST_ON_SPAN_2, 'example_count': 1250.0},
                                 blessed=False)
    story['stale'] = runs.add_refused_push(STALE_REASON, SECOND, FIRST_ON_SPAN_2)
    story['range'] = runs.add(RANGE, FIRST_ON_SPAN_2, span_range=(1, 3), blessed=True)
    return runs, story


def summarize(runs, run):
    config = dataclasses.replace(PipelineConfig(), pipeline_name=runs.pipeline_name)
    return summary.summarize(runs.connection_config(), config, run.run_id, SECONDS)


def _expected(run, metrics, **fields):
    values = dict(span=run.span, blessed=True, metrics=metrics, baseline_metrics={},
                  baseline_uri=None, pushed=True,
                  pushed_destination='/serving/%s/%s' % (MODEL, run.version),
                  model_uri=run.model_uri, seconds=SECONDS, run_id=run.run_id)
    values.update(fields)
    values.setdefault('pushed_version', run.version if values['pushed'] else None)
    return summary.RunSummary(**values)


def test_first_model_has_no_baseline_and_is_pushed(story):
    runs, s = story
    result = summarize(runs, s['first'])
    assert result == _expected(s['first'], FIRST)
    assert result.format().splitlines() == [
        'Summary',
        '  span used      : 1',
        '  metrics (eval) : auc 0.9495, binary_accuracy 0.8788, example_count 1238.0000',
        '  baseline       : none (first model)',
        '  blessed        : yes',
        '  pushed to      : /serving/taxi/1',
        '  wall time      : 41.3 s',
    ]
    assert not result.stale_baseline


def test_retrain_shows_the_baseline_it_was_compared_with(story):
    runs, s = story
    run = s['retrain']
    assert run.baseline_version == 1
    result = summarize(runs, run)
    assert result == _expected(run, SECOND, baseline_metrics=FIRST_ON_SPAN_2,
                               baseline_uri='stable v1, /serving/taxi/1')
    assert result.format().splitlines()[1:6] == [
        '  span used      : 2',
        '  metrics (eval) : auc 0.9408, binary_accuracy 0.8833, example_count 1217.0000',
        '  baseline       : auc 0.9416, binary_accuracy 0.8694, example_count 1217.0000 '
        '(stable v1, /serving/taxi/1)',
        '  blessed        : yes',
        '  pushed to      : /serving/taxi/2',
    ]


def test_rejected_model_is_not_blessed_and_nothing_pushed(story):
    runs, s = story
    run = s['rejected']
    result = summarize(runs, run)
    stable = run.baseline_version   # v1 or v2: the synthetic canary may have been promoted.
    assert result == _expected(
        run, WEAK, blessed=False, pushed=False, pushed_destination=None,
        baseline_metrics={**FIRST_ON_SPAN_2, 'example_count': 1250.0},
        baseline_uri='stable v%d, /serving/taxi/%d' % (stable, stable))
    lines = result.format().splitlines()
    assert lines[4:6] == ['  blessed        : NO (thresholds not met or regression vs baseline)',
                          '  pushed to      : nothing pushed']
    assert not result.stale_baseline


def test_blessed_but_refused_push_names_the_stale_baseline(story):
    runs, s = story
    run = s['stale']
    result = summarize(runs, run)
    assert result == _expected(
        run, SECOND, pushed=False, pushed_destination=None, baseline_metrics=FIRST_ON_SPAN_2,
        baseline_uri='stable v%d, /serving/taxi/%d' % ((run.baseline_version,) * 2),
        not_pushed_reason=STALE_REASON)
    assert result.stale_baseline
    assert result.format().splitlines()[4:6] == [
        '  blessed        : yes',
        '  pushed to      : NOT PUSHED: ' + STALE_REASON]


def test_span_range_run_reports_the_range(story):
    runs, s = story
    run = s['range']
    result = summarize(runs, run)
    assert (result.span, result.span_range, result.span_used) == (3, '1-3', '1-3')
    assert result.pushed and result.pushed_destination == '/serving/taxi/%d' % run.version
    assert result.metrics == RANGE
    assert result.format().splitlines()[1] == '  span used      : 1-3'


def test_each_run_summary_reads_only_its_own_run(story):
    """Later runs wrote executions of the same nodes: every summary stays its own."""
    runs, s = story
    for name, run in s.items():
        result = summarize(runs, run)
        assert (result.run_id, result.span, result.model_uri) == (
            run.run_id, run.span, run.model_uri), name
        assert result.pushed_destination == (
            '/serving/taxi/%d' % run.version if run.version else None), name
    assert len({run.model_uri for run in s.values()}) == len(s)


def test_an_unknown_run_id_reports_nothing(story):
    runs, s = story
    result = summary.summarize(runs.connection_config(), PipelineConfig(), 'no-such-run', 1.0)
    assert (result.span, result.blessed, result.pushed, result.metrics) == (None, None, False, {})


def test_all_runs_line_and_exit_status_follow_the_summaries(story, capsys):
    """`run --span 1 --span 2 ...`: the "All runs:" outcome of each summary, and
    exit 3 with one error line per run refused for a stale baseline."""
    runs, s = story
    summaries = {name: summarize(runs, run) for name, run in s.items()}
    assert {name: cli._outcome(r) for name, r in summaries.items()} == {
        'first': 'blessed+pushed', 'retrain': 'blessed+pushed', 'rejected': 'not pushed',
        'stale': 'blessed, NOT PUSHED (baseline moved)', 'range': 'blessed+pushed'}
    assert cli._exit_status([summaries['first'], summaries['rejected']]) == 0
    assert capsys.readouterr().err == ''
    assert cli._exit_status(list(summaries.values())) == cli.EXIT_STALE_BASELINE
    assert capsys.readouterr().err.splitlines() == [
        'error: span %d: %s' % (s['stale'].span, STALE_REASON)]
