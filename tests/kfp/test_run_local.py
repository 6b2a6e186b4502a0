"""`kfp run-local`'s adaptations and checks, on the real compiled package with
kfp.local's own executor-input construction and TFX's own KFP v2 entrypoint
parser (no processes, except the one marked e2e)."""
import json
import os

import pytest
import yaml

from runners import kfp_local
from runners.kfp_local import adapt, package as package_lib, runner
from tests.conftest import PROJECT_ROOT, one_error_line

STATISTICS_GEN = 'StatisticsGen'


@pytest.fixture(scope='module')
def local_package(kfp_package):
    return kfp_local.load_package(kfp_package)


def _component(local_package, name):
    from kfp.pipeline_spec import pipeline_spec_pb2
    from google.protobuf import json_format
    return json_format.ParseDict(local_package.spec['components'][name],
                                 pipeline_spec_pb2.ComponentSpec())


def _upstream_examples(local_package, tmp_path):
    """CsvExampleGen's `examples` output as kfp.local hands it downstream: the
    RuntimeArtifact its executor wrote, typed by the IR, through kfp.local's
    own output collection (a dsl.Artifact)."""
    from kfp.local import executor_output_utils
    from kfp.pipeline_spec import pipeline_spec_pb2
    produced = _component(local_package, 'CsvExampleGen').output_definitions.artifacts['examples']
    artifact = pipeline_spec_pb2.RuntimeArtifact(name='examples', uri=str(tmp_path / 'examples'),
                                                 type=produced.artifact_type)
    artifact.metadata.update({'span': 1.0, 'split_names': '["train", "eval"]'})
    return executor_output_utils.runtime_artifact_to_dsl_artifact(artifact)


def _statistics_gen_input(local_package, tmp_path):
    from kfp.local import executor_input_utils
    return executor_input_utils.construct_executor_input(
        component_spec=_component(local_package, STATISTICS_GEN),
        arguments={'examples': _upstream_examples(local_package, tmp_path),
                   'exclude_splits': '[]'},
        task_root=str(tmp_path / STATISTICS_GEN), block_input_artifact=False)


def test_tfx_cannot_read_the_input_types_kfp_local_gives_without_the_adaptation(
        local_package, tmp_path):
    """The failure the issue reports, reproduced with both real libraries."""
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entry
    executor_input = _statistics_gen_input(local_package, tmp_path)
    assert executor_input.inputs.artifacts['examples'].artifacts[0].type.schema_title == (
        adapt.GENERIC_SCHEMA_TITLE)
    with pytest.raises(ImportError, match='system.Artifact'):
        entry.parse_raw_artifact_dict(executor_input.inputs.artifacts)


def test_restored_types_give_tfx_the_declared_artifact_class(local_package, tmp_path):
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entry
    from tfx.types import standard_artifacts
    executor_input = _statistics_gen_input(local_package, tmp_path)
    changed = adapt.restore_declared_types(executor_input, _component(local_package,
                                                                      STATISTICS_GEN))
    (examples,) = entry.parse_raw_artifact_dict(executor_input.inputs.artifacts)['examples']
    assert changed == ['examples']
    assert isinstance(examples, standard_artifacts.Examples)
    assert examples.span == 1 and examples.split_names == '["train", "eval"]'


def _mounts(local_package, tmp_path):
    return package_lib.local_mounts(local_package, str(tmp_path), str(tmp_path / 'serving'))


def test_the_serving_pvc_is_the_local_serving_root_only_where_it_is_mounted(local_package,
                                                                             tmp_path):
    from kfp.pipeline_spec import pipeline_spec_pb2
    (mount,) = _mounts(local_package, tmp_path)
    assert (mount.path, mount.local) == ('/serving', str(tmp_path / 'serving'))

    def translated(executor_label, value):
        executor_input = pipeline_spec_pb2.ExecutorInput()
        executor_input.inputs.parameter_values['p'].string_value = value
        adapt.translate_mounted_paths(executor_input, [mount], executor_label)
        return executor_input.inputs.parameter_values['p'].string_value

    assert translated('CanaryPusher_executor', '/serving') == str(tmp_path / 'serving')
    assert translated('BaselineModel_executor', '/serving/taxi/rollout.json') == str(
        tmp_path / 'serving' / 'taxi' / 'rollout.json')
    assert translated('BaselineModel_executor', '/servingX') == '/servingX'   # Not on the mount.
    assert translated('Trainer_executor', '/serving') == '/serving'          # Not mounted there.


def test_a_local_serving_root_without_a_volume_is_refused(local_package, tmp_path):
    bare = package_lib.LocalPackage(local_package.path, package_lib.KFP, local_package.spec)
    with pytest.raises(kfp_local.KfpLocalError, match='no PVC is mounted at: .*--serving-pvc'):
        _mounts(bare, tmp_path)


def test_vertex_fuse_paths_and_its_serving_root_are_local_folders(vertex_job, tmp_path):
    path = tmp_path / 'job.json'
    path.write_text(json.dumps(vertex_job))
    mounts = _mounts(kfp_local.load_package(str(path)), tmp_path)
    assert [(m.path, m.local) for m in mounts] == [
        ('/gcs/bucket/serving', str(tmp_path / 'serving')), ('/gcs', str(tmp_path / 'gcs'))]
    assert mounts[1].translate('/gcs/other/file') == str(tmp_path / 'gcs' / 'other' / 'file')


def test_runtime_defaults_inside_the_image_come_from_this_checkout(local_package):
    arguments = package_lib.runtime_arguments(local_package, {'data_root': '/my/spans'})
    assert arguments.values == {
        'data_root': '/my/spans',   # Given: kept.
        'schema_path': os.path.join(PROJECT_ROOT, 'data', 'taxi', 'schema.pbtxt')}
    assert os.path.isfile(arguments.values['schema_path'])
    (note,) = arguments.notes
    assert note.startswith('schema_path = ') and '--param schema_path=' in note


def test_vertex_hook_output_updates_the_task_as_vertex_does(vertex_job, tmp_path):
    """Vertex runs ExampleGen's driver hook, then gives the executor the span it
    resolved, as a parameter and on the output Examples artifact."""
    from google.protobuf import json_format
    from kfp.local import executor_input_utils
    from kfp.pipeline_spec import pipeline_spec_pb2
    spec = vertex_job['pipelineSpec']
    hook = adapt.pre_cache_check_command(spec['deploymentSpec']['executors']['CsvExampleGen_executor'])
    assert hook[:3] == ['python', '-m', 'tfx.orchestration.kubeflow.v2.file_based_example_gen.driver']
    component = json_format.ParseDict(spec['components']['CsvExampleGen'],
                                      pipeline_spec_pb2.ComponentSpec())
    executor_input = executor_input_utils.construct_executor_input(
        component_spec=component, arguments={'input_base': '/data'},
        task_root=str(tmp_path), block_input_artifact=False)
    written = pipeline_spec_pb2.ExecutorOutput()   # What the driver writes.
    written.parameter_values['span'].number_value = 2
    written.parameter_values['input_config'].string_value = '{"splits": [{"pattern": "span-2/*"}]}'
    written.artifacts['examples'].artifacts.add().metadata.update({'span': 2.0})
    adapt.apply_hook_output(executor_input, written)
    parameters = executor_input.inputs.parameter_values
    assert parameters['span'].number_value == 2 and 'span-2/*' in parameters['input_config'].string_value
    (examples,) = executor_input.outputs.artifacts['examples'].artifacts
    assert examples.metadata['span'] == 2 and examples.uri.endswith('examples')


def test_task_folders_keep_tfx_component_names():
    assert runner._task_folder('CsvExampleGen') == 'CsvExampleGen'   # kfp.local: 'ampleGen'
    assert runner._task_folder('comp-train') == 'train'               # KFP SDK names


@pytest.fixture
def tfx_canary(capsys):
    from runners import cli

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def _bad_packages(tmp_path, kfp_docs):
    resolver = yaml.safe_load(yaml.safe_dump(kfp_docs[0]))
    resolver['deploymentSpec']['executors']['BaselineModel_executor'] = {'resolver': {}}
    files = {'resolver.yaml': yaml.safe_dump(resolver), 'notes.txt': 'x',
             'broken.yaml': 'a: [', 'empty.json': '{}', 'spec.yaml': yaml.safe_dump({'a': 1})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return {name: str(tmp_path / name) for name in files}


@pytest.mark.parametrize('name,expected', [
    ('missing.yaml', 'does not exist: compile it with `tfx-canary kfp compile'),
    ('resolver.yaml', 'executors kfp.local cannot run (BaselineModel_executor)'),
    ('notes.txt', 'expected a KFP package (*.yaml) or a Vertex PipelineJob (*.json)'),
    ('broken.yaml', 'is not readable YAML'),
    ('empty.json', 'is not a Vertex PipelineJob (no pipelineSpec)'),
    ('spec.yaml', 'holds no PipelineSpec'),
])
def test_bad_packages_are_one_line_and_nothing_is_written(tfx_canary, tmp_path, kfp_docs, name,
                                                          expected):
    path = _bad_packages(tmp_path, kfp_docs).get(name, str(tmp_path / name))
    workspace = tmp_path / 'ws'
    line = one_error_line(*tfx_canary('kfp', 'run-local', '--package', path,
                                      '--workspace', str(workspace)))
    assert path in line and expected in line
    assert not workspace.exists()


def test_an_unknown_runtime_parameter_is_one_line(tfx_canary, kfp_package, tmp_path):
    line = one_error_line(*tfx_canary('kfp', 'run-local', '--package', kfp_package,
                                      '--workspace', str(tmp_path / 'ws'), '--param', 'nope=1'))
    assert 'no such runtime parameter' in line and not (tmp_path / 'ws').exists()


@pytest.mark.e2e
@pytest.mark.parametrize('start', ['forked', 'cold'])
def test_a_failing_task_is_named_with_its_log(tfx_canary, kfp_package, tmp_path, start):
    """Every task that can run first fails at once (kfp.local's order among
    independent tasks is not fixed): a corrupt rollout.json for BaselineModel,
    missing data for CsvExampleGen, a missing schema for ImportSchemaGen. The
    run stops at the first, naming the task, its own error and its log, whether
    the task was forked from the pre-started interpreter or ran cold."""
    serving = tmp_path / 'serving'
    (serving / 'taxi').mkdir(parents=True)
    (serving / 'taxi' / 'rollout.json').write_text('{not json')
    code, out, err = tfx_canary(
        'kfp', 'run-local', '--package', kfp_package, '--workspace', str(tmp_path / 'ws'),
        '--serving-root', str(serving), '--param', 'data_root=%s' % (tmp_path / 'no-data'),
        '--param', 'schema_path=%s' % (tmp_path / 'no-schema.pbtxt'),
        *(['--cold-start'] if start == 'cold' else []))
    assert code == 2
    (progress,) = [line for line in out.splitlines() if '] ' in line]   # Nothing ran after it.
    task = progress.split()[1]
    assert task in ('BaselineModel', 'CsvExampleGen', 'ImportSchemaGen') and 'FAILED' in progress
    line = err.strip()
    assert '\n' not in line and line.startswith('error: task %s failed (exit 1): ' % task)
    detail, log = line[len('error: task %s failed (exit 1): ' % task):].rsplit('; its log: ', 1)
    assert log.endswith(os.path.join(task, runner.TASK_LOG))
    with open(log) as f:
        assert detail in f.read()   # The task's own last error line.


def test_the_summary_reads_what_the_tasks_reported():
    """As TFX's entrypoint writes executor outputs: ExampleGen's span is a custom
    property that shares a property's name, so it comes back as custom:span."""
    from runners.kfp_local import summary
    out = runner.ArtifactOut

    def task(name, *outputs):
        return runner.TaskRun(name, True, 1.0, '/logs/%s' % name, 0, outputs)

    run = runner.LocalRun('p.yaml', 'tfx-canary-taxi', '/ws/kfp-local/tfx-canary-taxi-1', (
        task('CsvExampleGen', out('examples', 'tfx.Examples', '/e', {'custom:span': 2.0})),
        task('BaselineModel', out('model', 'tfx.Model', '/b', {
            'has_baseline': 1.0, 'baseline_version': 1.0, 'baseline_uri': '/s/taxi/1'})),
        task('Trainer', out('model', 'tfx.Model', '/m', {})),
        task('Evaluator', out('blessing', 'tfx.ModelBlessing', '/bl', {'blessed': 1.0})),
        task('CanaryPusher', out('pushed_model', 'tfx.PushedModel', '/p', {
            'pushed': 1.0, 'pushed_destination': '/s/taxi/2'}))), 12.5, {})
    result = summary.summarize(run)
    assert (result.span, result.blessed, result.pushed, result.pushed_destination) == (
        2, True, True, '/s/taxi/2')
    assert (result.baseline_uri, result.model_uri, result.run_id) == (
        'stable v1, /s/taxi/1', '/m', 'tfx-canary-taxi-1')
