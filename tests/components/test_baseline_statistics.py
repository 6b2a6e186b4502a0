"""BaselineModel's statistics output: the training statistics staged beside the
stable version, or an empty artifact that says why there are none."""
import os

from tfx.types import standard_artifacts

from components.baseline import executor as baseline_executor
from components.baseline import statistics as baseline_statistics
from rollout import training_data
from tests.components.conftest import statistics_artifact
from tests.kfp.test_baseline import MODEL, model_artifact, stage
from tests.conftest import SCHEMA_PATH


def _run(tmp_path, serving_root):
    model = model_artifact(str(tmp_path / 'out' / 'model'))
    stats = standard_artifacts.ExampleStatistics()
    stats.uri = str(tmp_path / 'out' / 'statistics')
    os.makedirs(stats.uri)
    baseline_executor.Executor().Do({}, {'model': [model], 'statistics': [stats]},
                                    {'serving_root': str(serving_root), 'model_name': MODEL})
    return stats


def _stage_data(tmp_path, serving_root, version, statistics, span):
    source = statistics_artifact(tmp_path / ('trained-%d' % version), statistics, span)
    training_data.write(str(serving_root), MODEL, version, training_data.TrainingData(
        statistics_dir=source.uri, schema_file=SCHEMA_PATH, span='span %d' % span))


def test_the_stable_versions_training_statistics_not_the_canarys(tmp_path, bundled_statistics):
    serving = tmp_path / 'serving'
    stage(str(serving), [1, 2], stable=1)              # stable v1, canary v2
    _stage_data(tmp_path, serving, 1, bundled_statistics[1], 1)
    _stage_data(tmp_path, serving, 2, bundled_statistics[2], 2)
    stats = _run(tmp_path, serving)
    assert stats.get_int_custom_property(baseline_statistics.HAS_STATISTICS) == 1
    assert stats.get_int_custom_property(baseline_statistics.STATISTICS_VERSION) == 1
    assert stats.get_string_custom_property(baseline_statistics.STATISTICS_SPAN) == 'span 1'
    assert sorted(stats.splits) == ['eval', 'train']
    with open(os.path.join(stats.uri, 'Split-train', 'FeatureStats.pb'), 'rb') as f:
        assert f.read() == bundled_statistics[1].SerializeToString()


def test_nothing_serving_gives_empty_statistics_with_a_note(tmp_path):
    stats = _run(tmp_path, tmp_path / 'serving')
    assert stats.get_int_custom_property(baseline_statistics.HAS_STATISTICS) == 0
    assert 'nothing serves yet' in stats.get_string_custom_property(
        baseline_statistics.STATISTICS_NOTE)
    assert not baseline_statistics.has_statistics(stats)


def test_a_stable_staged_before_training_data_existed_is_named(tmp_path):
    serving = tmp_path / 'serving'
    stage(str(serving), [1], stable=1)                 # no training-data/1
    stats = _run(tmp_path, serving)
    assert stats.get_int_custom_property(baseline_statistics.HAS_STATISTICS) == 0
    note = stats.get_string_custom_property(baseline_statistics.STATISTICS_NOTE)
    assert note.startswith('stable version 1 was staged without its training statistics')
