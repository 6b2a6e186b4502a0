"""BaselineModel: resolves the stable version from rollout.json at run time,
copies it into a Model artifact (or marks it empty), and the Evaluator/Trainer
executors honour an empty one -- also after a KFP metadata round trip."""
import os

import pytest

from components.baseline import driver as baseline_driver
from components.baseline import executor as baseline_executor
from components.baseline import resolve
from rollout import state as state_lib

MODEL = 'taxi'


def fake_saved_model(path, content=b'graph-v1'):
    """Enough of a SavedModel for staging/copying (nothing here loads it)."""
    os.makedirs(os.path.join(path, 'variables'), exist_ok=True)
    with open(os.path.join(path, 'saved_model.pb'), 'wb') as f:
        f.write(content)
    with open(os.path.join(path, 'variables', 'variables.index'), 'wb') as f:
        f.write(b'index')


def stage(serving_root, versions, stable):
    """Writes version dirs and a rollout.json whose stable is `stable`."""
    model_dir = os.path.join(serving_root, MODEL)
    state = state_lib.RolloutState.empty(MODEL)
    for version in versions:
        fake_saved_model(os.path.join(model_dir, str(version)), b'graph-v%d' % version)
        state = state_lib.stage(state, version, 10)
    if state.canary_version is not None and stable == state.canary_version:
        state = state_lib.promote(state)
    os.makedirs(model_dir, exist_ok=True)
    state_lib.save_state(os.path.join(model_dir, 'rollout.json'), state)
    return state


def model_artifact(uri):
    from tfx.types import standard_artifacts
    artifact = standard_artifacts.Model()
    artifact.uri = uri
    return artifact


def run_executor(tmp_path, serving_root, exec_extra=None):
    out = model_artifact(str(tmp_path / 'out' / 'model'))
    props = {'serving_root': str(serving_root), 'model_name': MODEL}
    props.update(exec_extra or {})
    baseline_executor.Executor().Do({}, {'model': [out]}, props)
    return out


# ------------------------------------------------------------- resolution

def test_nothing_staged_means_no_baseline(tmp_path):
    assert resolve.stable_baseline(str(tmp_path), MODEL) is None


def test_stable_not_canary_is_the_baseline(tmp_path):
    stage(str(tmp_path), [1, 2], stable=1)     # 1 stable, 2 canary
    baseline = resolve.stable_baseline(str(tmp_path), MODEL)
    assert baseline.version == 1
    assert baseline.model_dir == os.path.join(str(tmp_path), MODEL, '1')
    assert baseline.fingerprint.startswith('saved_model.pb:')
    assert 'rollout.json stable_version (phase canary)' in baseline.source


def test_missing_stable_dir_fails_loudly_instead_of_blessing_blindly(tmp_path):
    import shutil
    stage(str(tmp_path), [1], stable=1)
    shutil.rmtree(os.path.join(str(tmp_path), MODEL, '1'))
    with pytest.raises(resolve.BaselineError, match='holds no SavedModel'):
        resolve.stable_baseline(str(tmp_path), MODEL)


def test_corrupt_rollout_state_is_an_error_not_a_missing_baseline(tmp_path):
    from rollout.errors import RolloutError
    os.makedirs(tmp_path / MODEL)
    (tmp_path / MODEL / 'rollout.json').write_text('{not json')
    with pytest.raises(RolloutError, match='not valid JSON'):
        resolve.stable_baseline(str(tmp_path), MODEL)


# ------------------------------------------------------------- executor

def test_executor_copies_the_stable_model_where_evaluator_and_trainer_look(tmp_path):
    from tfx.utils import path_utils
    serving = tmp_path / 'serving'
    stage(str(serving), [1, 2], stable=2)
    out = run_executor(tmp_path, serving)
    serving_dir = path_utils.serving_model_path(out.uri, path_utils.is_old_model_artifact(out))
    with open(os.path.join(serving_dir, 'saved_model.pb'), 'rb') as f:
        assert f.read() == b'graph-v2'
    assert os.path.isfile(os.path.join(serving_dir, 'variables', 'variables.index'))
    assert out.get_int_custom_property(resolve.HAS_BASELINE) == 1
    assert out.get_int_custom_property(resolve.BASELINE_VERSION) == 2
    assert out.get_string_custom_property(resolve.BASELINE_URI) == os.path.join(str(serving), MODEL, '2')
    assert 'stable_version' in out.get_string_custom_property(resolve.BASELINE_SOURCE)
    assert resolve.has_baseline(out)


def test_executor_marks_an_empty_artifact_on_a_first_run(tmp_path):
    out = run_executor(tmp_path, tmp_path / 'serving')
    assert out.get_int_custom_property(resolve.HAS_BASELINE) == 0
    assert out.get_int_custom_property(resolve.BASELINE_VERSION) == 0
    assert 'nothing staged yet' in out.get_string_custom_property(resolve.BASELINE_SOURCE)
    assert not os.path.exists(os.path.join(out.uri, 'Format-Serving'))
    assert not resolve.has_baseline(out)


def test_executor_uses_the_version_the_driver_resolved(tmp_path):
    serving = tmp_path / 'serving'
    stage(str(serving), [1, 2], stable=2)
    out = run_executor(tmp_path, serving, {resolve.RESOLVED_VERSION: 1})
    assert out.get_int_custom_property(resolve.BASELINE_VERSION) == 1
    out = run_executor(tmp_path / 'again', serving, {resolve.RESOLVED_VERSION: 0})
    assert out.get_int_custom_property(resolve.HAS_BASELINE) == 0


def test_driver_puts_the_resolved_baseline_into_the_cache_key(tmp_path):
    from tfx.orchestration.portable import data_types
    serving = tmp_path / 'serving'
    info = data_types.ExecutionInfo(exec_properties={'serving_root': str(serving), 'model_name': MODEL})
    output = baseline_driver.BaselineDriver(None).run(info)
    assert output.exec_properties[resolve.RESOLVED_VERSION].int_value == 0
    stage(str(serving), [1], stable=1)
    output = baseline_driver.BaselineDriver(None).run(info)
    assert output.exec_properties[resolve.RESOLVED_VERSION].int_value == 1
    fingerprint = output.exec_properties[resolve.RESOLVED_FINGERPRINT].string_value
    assert fingerprint.startswith('saved_model.pb:')


# ------------------------------------------------- evaluator and trainer

def kfp_round_trip(artifact):
    """What the next KFP task's container sees: TFX's own v2 entrypoint code
    turns the artifact into RuntimeArtifact metadata and back."""
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as utils

    runtime = utils.to_runtime_artifact(artifact, {})
    runtime.type.CopyFrom(pipeline_spec_pb2.ArtifactTypeSchema(
        instance_schema=compiler_utils.get_artifact_schema(type(artifact))))
    return utils.parse_raw_artifact_dict(
        {'x': pipeline_spec_pb2.ArtifactList(artifacts=[runtime])})['x'][0]


@pytest.fixture
def captured_evaluator(monkeypatch):
    """The stock Evaluator's Do replaced by a recorder that writes a blessing."""
    from tfx.components.evaluator import executor as evaluator_executor
    seen = {}

    def fake_do(self, input_dict, output_dict, exec_properties):
        seen['input_dict'] = input_dict
        output_dict['blessing'][0].set_int_custom_property('blessed', 1)

    monkeypatch.setattr(evaluator_executor.Executor, 'Do', fake_do)
    return seen


def evaluator_outputs(tmp_path):
    from tfx.types import standard_artifacts
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / 'eval'), str(tmp_path / 'blessing')
    return {'evaluation': [evaluation], 'blessing': [blessing]}


@pytest.mark.parametrize('through_kfp', [False, True])
def test_evaluator_drops_an_empty_baseline_and_records_it(tmp_path, captured_evaluator, through_kfp):
    empty = run_executor(tmp_path, tmp_path / 'serving')
    if through_kfp:
        empty = kfp_round_trip(empty)
    outputs = evaluator_outputs(tmp_path)
    baseline_executor.BaselineAwareEvaluatorExecutor().Do(
        {'examples': [], 'model': [model_artifact('/m')], 'baseline_model': [empty]}, outputs, {})
    # No baseline key at all: TFX's Evaluator then skips change thresholds.
    assert 'baseline_model' not in captured_evaluator['input_dict']
    blessing = outputs['blessing'][0]
    assert blessing.get_int_custom_property(resolve.HAS_BASELINE) == 0
    assert blessing.get_int_custom_property(resolve.BASELINE_VERSION) == 0


@pytest.mark.parametrize('through_kfp', [False, True])
def test_evaluator_keeps_a_real_baseline_and_records_its_version(tmp_path, captured_evaluator,
                                                                 through_kfp):
    serving = tmp_path / 'serving'
    stage(str(serving), [1, 2, 3], stable=3)
    baseline = run_executor(tmp_path, serving)
    if through_kfp:
        baseline = kfp_round_trip(baseline)
    outputs = evaluator_outputs(tmp_path)
    baseline_executor.BaselineAwareEvaluatorExecutor().Do(
        {'examples': [], 'model': [model_artifact('/m')], 'baseline_model': [baseline]}, outputs, {})
    assert captured_evaluator['input_dict']['baseline_model'] == [baseline]
    for artifact in outputs['evaluation'] + outputs['blessing']:
        assert artifact.get_int_custom_property(resolve.HAS_BASELINE) == 1
        assert artifact.get_int_custom_property(resolve.BASELINE_VERSION) == 3
        assert artifact.get_string_custom_property(resolve.BASELINE_URI).endswith('/3')


def test_trainer_gets_no_base_model_on_a_first_run(tmp_path, monkeypatch):
    from tfx.components.trainer import executor as trainer_executor
    seen = {}
    monkeypatch.setattr(trainer_executor.GenericExecutor, 'Do',
                        lambda self, i, o, e: seen.setdefault('inputs', i))
    empty = kfp_round_trip(run_executor(tmp_path, tmp_path / 'serving'))
    baseline_executor.BaselineAwareTrainerExecutor().Do({'base_model': [empty], 'examples': []}, {}, {})
    assert 'base_model' not in seen['inputs'] and 'examples' in seen['inputs']


def test_artifacts_from_elsewhere_count_as_real_models():
    # e.g. a Resolver's output during the switch-over: no has_baseline property.
    assert resolve.present([model_artifact('/m')])[0].uri == '/m'
