"""The real CanaryPusher executor on tiny real SavedModels (no pipeline).

Covers what a user relies on: a blessed model is staged (stable first, then
canary), an unblessed one touches nothing, a model already serving is not
staged twice, a model judged against a baseline that has since moved is not
staged at all (compare-and-set), and keep_versions / tf_serving_root / the
KServe prefix reach the files TF Serving and KServe read.
"""
import os

import pytest
from tfx.types import standard_artifacts

from components.baseline import resolve
from components.canary_pusher import executor as pusher_executor
from rollout import control, tfserving
from rollout.errors import StaleBaselineError
from tests.components.conftest import with_custom_properties
from tests.rollout.conftest import snapshot_tree

MODEL = 'taxi'


def _artifact(cls, uri, **custom):
    artifact = cls()
    artifact.uri = uri
    return with_custom_properties(artifact, custom)


def _blessing(tmp_path, blessed=True, against='none'):
    """A ModelBlessing as BaselineAwareEvaluator writes it.

    against: 'none' = judged with no baseline, N = against stable vN,
    'unrecorded' = a stock Evaluator's blessing (no baseline properties).
    """
    uri = str(tmp_path / 'blessing')
    os.makedirs(uri, exist_ok=True)
    custom = {'blessed': int(blessed)}
    if against == 'none':
        custom.update({resolve.HAS_BASELINE: 0, resolve.BASELINE_VERSION: 0})
    elif against != 'unrecorded':
        custom.update({resolve.HAS_BASELINE: 1, resolve.BASELINE_VERSION: against})
    return _artifact(standard_artifacts.ModelBlessing, uri, **custom)


@pytest.fixture
def push(tmp_path):
    """push(model_uri, blessed=True, against='none', **exec_properties) -> PushedModel."""
    serving_root = str(tmp_path / 'serving')
    counter = iter(range(1, 1000))

    def run(model_uri, blessed=True, against='none', extra_inputs=None, **overrides):
        n = next(counter)
        pushed = _artifact(standard_artifacts.PushedModel, str(tmp_path / ('pushed-%d' % n)))
        exec_properties = dict(serving_root=serving_root, model_name=MODEL,
                               canary_traffic_percent=15, keep_versions=5)
        exec_properties.update(overrides)
        inputs = {'model': [_artifact(standard_artifacts.Model, model_uri)],
                  'model_blessing': [_blessing(tmp_path / ('b%d' % n), blessed, against)]}
        inputs.update(extra_inputs or {})
        pusher_executor.Executor().Do(inputs, {'pushed_model': [pushed]}, exec_properties)
        return pushed

    run.serving_root = serving_root
    run.controller = lambda: control.RolloutController(serving_root, MODEL)
    return run


def _props(artifact):
    get_int, get_str = artifact.get_int_custom_property, artifact.get_string_custom_property
    return {'pushed': get_int('pushed'), 'version': get_str('pushed_version'),
            'role': get_str(pusher_executor.ROLLOUT_ROLE),
            'challenges': get_int(pusher_executor.CHALLENGES_STABLE_VERSION),
            'reason': get_str(pusher_executor.NOT_PUSHED_REASON)}


def test_first_blessed_model_becomes_stable_v1(push, tiny_models):
    pushed = push(tiny_models[1])
    assert _props(pushed) == {'pushed': 1, 'version': '1', 'role': 'stable', 'challenges': 0,
                              'reason': ''}
    assert pushed.get_string_custom_property('pushed_destination') == os.path.join(
        push.serving_root, MODEL, '1')
    state = push.controller().load()
    assert (state.stable_version, state.canary_version) == (1, None)
    assert os.path.isfile(os.path.join(push.serving_root, MODEL, '1', 'saved_model.pb'))


def test_blessed_against_stable_becomes_canary_at_configured_percent(push, tiny_models):
    push(tiny_models[1])
    pushed = push(tiny_models[2], against=1)
    assert _props(pushed) == {'pushed': 1, 'version': '2', 'role': 'canary', 'challenges': 1,
                              'reason': ''}
    state = push.controller().load()
    assert (state.stable_version, state.canary_version, state.canary_traffic_percent) == (1, 2, 15)


def test_not_blessed_changes_nothing_on_disk(push, tiny_models):
    pushed = push(tiny_models[1], blessed=False)
    assert pushed.get_int_custom_property('pushed') == 0
    assert not os.path.exists(push.serving_root)


def test_model_already_serving_as_canary_is_not_staged_again(push, tiny_models):
    push(tiny_models[1])
    push(tiny_models[2], against=1)
    before = snapshot_tree(push.serving_root)
    # The same export re-blessed (e.g. a re-run whose Evaluator re-executed).
    again = push(tiny_models[2], against=1)
    assert _props(again) == {'pushed': 1, 'version': '2', 'role': 'canary', 'challenges': 1,
                             'reason': ''}
    assert snapshot_tree(push.serving_root) == before
    assert push.controller().staged_versions() == [1, 2]


def test_model_already_serving_as_stable_is_not_staged_again(push, tiny_models):
    push(tiny_models[1])
    push(tiny_models[2], against=1)
    push.controller().promote()
    before = snapshot_tree(push.serving_root)
    again = push(tiny_models[2], against=2)
    assert _props(again) == {'pushed': 1, 'version': '2', 'role': 'stable', 'challenges': 0,
                             'reason': ''}
    assert snapshot_tree(push.serving_root) == before


@pytest.mark.parametrize('judged, moved_by', [('none', 'another first run'),
                                              (1, 'a promote')])
def test_baseline_moved_during_the_run_stages_nothing(push, tiny_models, judged, moved_by):
    push(tiny_models[1])                       # stable v1
    if moved_by == 'a promote':
        push(tiny_models[2], against=1)        # canary v2 ...
        push.controller().promote()            # ... now stable v2
    before = snapshot_tree(push.serving_root)
    pushed = push(tiny_models[3], against=judged)
    props = _props(pushed)
    assert props['pushed'] == 0 and props['version'] == ''
    assert pushed.get_int_custom_property(pusher_executor.STALE_BASELINE) == 1
    stable_now = push.controller().load().stable_version
    judged_text = 'no baseline' if judged == 'none' else 'stable v%d' % judged
    assert ('evaluated against %s, but taxi now serves stable v%d' % (judged_text, stable_now)
            in props['reason'])
    assert 're-run the pipeline' in props['reason']
    assert snapshot_tree(push.serving_root) == before


def test_stale_baseline_fails_the_execution_when_asked(push, tiny_models):
    """Kubeflow's setting: the task fails (its status is the run's outcome)."""
    push(tiny_models[1])
    before = snapshot_tree(push.serving_root)
    with pytest.raises(StaleBaselineError, match='re-run the pipeline'):
        push(tiny_models[2], against='none', fail_on_stale_baseline=1)
    assert snapshot_tree(push.serving_root) == before


def test_blessing_without_baseline_record_is_staged(push, tiny_models):
    """A stock Evaluator's blessing says nothing about its baseline: no compare-and-set."""
    push(tiny_models[1])
    pushed = push(tiny_models[2], against='unrecorded')
    assert _props(pushed)['role'] == 'canary'


def test_keep_versions_prunes_old_versions_but_never_stable(push, tiny_models):
    push(tiny_models[1], keep_versions=2)
    for weight in (2, 3, 4):
        push(tiny_models[weight], against=1, keep_versions=2)
    # Canaries 2 and 3 were replaced; keep=2 keeps the newest two plus stable.
    assert push.controller().staged_versions() == [1, 3, 4]
    state = push.controller().load()
    assert (state.stable_version, state.canary_version) == (1, 4)


def test_tf_serving_root_and_kserve_prefix_reach_the_serving_files(push, tiny_models):
    push(tiny_models[1], tf_serving_root='/models',
         kserve_storage_uri_prefix='gs://bucket/serving')
    entry = tfserving.find_entry(
        tfserving.read_config(tfserving.config_path(push.serving_root)), MODEL)
    assert entry.base_path == '/models/taxi'
    with open(os.path.join(push.serving_root, MODEL, 'kserve', 'inferenceservice.yaml')) as f:
        manifest = f.read()
    assert 'gs://bucket/serving/taxi/1' in manifest


def _trained_on(tmp_path, bundled_statistics, span):
    """The StatisticsGen and ImportSchemaGen outputs a model was trained with."""
    import shutil
    from tests.components.conftest import examples_artifact, statistics_artifact
    from tests.conftest import SCHEMA_PATH
    schema_dir = tmp_path / ('schema-%d' % span)
    os.makedirs(schema_dir)
    shutil.copy(SCHEMA_PATH, schema_dir / 'schema.pbtxt')
    schema = _artifact(standard_artifacts.Schema, str(schema_dir))
    stats = statistics_artifact(tmp_path / ('stats-%d' % span), bundled_statistics[span], span)
    examples = examples_artifact(tmp_path / ('examples-%d' % span), span)
    return {'statistics': [stats], 'schema': [schema], 'examples': [examples]}


def test_each_version_is_staged_with_what_it_was_trained_on(push, tiny_models, tmp_path,
                                                            bundled_statistics):
    from rollout import training_data
    from tests.conftest import SCHEMA_PATH
    push(tiny_models[1], extra_inputs=_trained_on(tmp_path, bundled_statistics, 1))
    push(tiny_models[2], against=1, extra_inputs=_trained_on(tmp_path, bundled_statistics, 2))
    for version, span in ((1, 1), (2, 2)):
        staged = training_data.read(push.serving_root, MODEL, version)
        assert (staged.span, staged.splits) == ('span %d' % span, ('eval', 'train'))
        with open(staged.statistics_file('train'), 'rb') as f:
            assert f.read() == bundled_statistics[span].SerializeToString()
        with open(staged.schema_file) as f, open(SCHEMA_PATH) as g:
            assert f.read() == g.read()
    # Outside the numbered folders TF Serving loads; not a version.
    assert push.controller().staged_versions() == [1, 2]
    assert not os.path.exists(os.path.join(push.serving_root, MODEL, '2', 'training-data'))


def test_pruned_versions_take_their_training_data_with_them(push, tiny_models, tmp_path,
                                                            bundled_statistics):
    from rollout import training_data
    push(tiny_models[1], keep_versions=2, extra_inputs=_trained_on(tmp_path, bundled_statistics, 1))
    for weight in (2, 3, 4):
        push(tiny_models[weight], against=1, keep_versions=2,
             extra_inputs=_trained_on(tmp_path / str(weight), bundled_statistics, 2))
    assert push.controller().staged_versions() == [1, 3, 4]
    kept = sorted(int(n) for n in os.listdir(training_data.root(push.serving_root, MODEL)))
    assert kept == [1, 3, 4]


def test_a_refused_push_stages_no_training_data(push, tiny_models, tmp_path, bundled_statistics):
    from rollout import training_data
    push(tiny_models[1], extra_inputs=_trained_on(tmp_path, bundled_statistics, 1))
    pushed = push(tiny_models[2], against='none',
                  extra_inputs=_trained_on(tmp_path / 'late', bundled_statistics, 2))
    assert pushed.get_int_custom_property('pushed') == 0
    assert os.listdir(training_data.root(push.serving_root, MODEL)) == ['1']


def test_a_model_missing_a_configured_signature_is_not_staged(push, tiny_models):
    from rollout.errors import RolloutError
    with pytest.raises(RolloutError, match='predict_json'):
        push(tiny_models[1], required_signatures='serving_default,predict_json')
    assert push.controller().staged_versions() == []
