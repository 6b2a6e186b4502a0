"""Real TFX KubeflowV2 compiles for both targets, read back and checked:
no resolver on KFP, the same components as the local pipeline, GPU and Beam
resources, runtime parameters, caching and the Kubernetes platform spec."""
import json

import pytest

from pipeline.configs import PipelineConfig
from runners import kfp_spec
from runners import kubeflow_runner
from pipeline.pipeline import create_pipeline
from tests.kfp.conftest import kfp_config, vertex_config

BEAM_STEPS = ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')


def container(spec, task):
    return kfp_spec.containers(spec)[kfp_spec.task_executor_label(spec, task)]


def test_kfp_target_has_only_container_and_importer_executors(spec):
    kinds = kfp_spec.executor_kinds(spec)
    assert kinds and set(kinds.values()) <= {'container', 'importer'}
    assert kfp_spec.non_kfp_executors(spec) == []


def test_compiled_and_local_pipelines_have_the_same_components(spec, tmp_path):
    local = create_pipeline(PipelineConfig(workspace=str(tmp_path)))
    assert sorted(spec['root']['dag']['tasks']) == sorted(c.id for c in local.components)


def test_both_trainer_and_evaluator_read_the_baseline_model_node(spec):
    tasks = spec['root']['dag']['tasks']
    for task, key in (('Trainer', 'base_model'), ('Evaluator', 'baseline_model')):
        source = tasks[task]['inputs']['artifacts'][key]['taskOutputArtifact']
        assert source == {'producerTask': 'BaselineModel', 'outputArtifactKey': 'model'}


def test_the_package_is_what_the_kfp_client_uploads(kfp_package, spec):
    from google.protobuf import json_format
    from kfp.client import client as kfp_client
    from kfp.pipeline_spec import pipeline_spec_pb2
    doc = kfp_client._extract_pipeline_yaml(kfp_package)  # pylint: disable=protected-access
    assert doc.pipeline_spec == json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert not doc.pipeline_spec.root.dag.tasks['BaselineModel'].caching_options.enable_cache
    assert spec['schemaVersion'] == '2.1.0'
    assert 'kubernetes' in doc.platform_spec.platforms


def test_trainer_requests_gpus_cpu_and_memory(spec):
    resources = container(spec, 'Trainer')['resources']
    assert resources['accelerator'] == {'type': 'nvidia.com/gpu', 'count': '2',
                                        'resourceType': 'nvidia.com/gpu', 'resourceCount': '2'}
    assert resources['resourceCpuRequest'] == resources['resourceCpuLimit'] == '4'
    assert resources['resourceMemoryRequest'] == resources['resourceMemoryLimit'] == '16G'
    assert (resources['cpuLimit'], resources['memoryLimit']) == (4.0, 16.0)


def test_beam_steps_get_the_beam_size_and_args(spec):
    for task in BEAM_STEPS:
        c = container(spec, task)
        assert c['resources']['resourceCpuRequest'] == '2', task
        assert c['resources']['resourceMemoryLimit'] == '8G', task
        assert 'accelerator' not in c['resources'], task
        assert '--direct_num_workers=2' in c['args'], task
    # The compiler drops platform_config for ExampleGen; we fill it back in.
    assert container(spec, 'CsvExampleGen')['resources']['memoryRequest'] == 8.0


def test_other_steps_get_the_default_size(spec):
    for task in ('ImportSchemaGen', 'ValidationGate', 'BaselineModel'):
        assert container(spec, task)['resources']['resourceMemoryRequest'] == '2G', task


def test_model_code_is_referenced_by_module_path(spec):
    tasks = spec['root']['dag']['tasks']
    assert tasks['Trainer']['inputs']['parameters']['run_fn']['runtimeValue']['constant'] == \
        'modules.model.run_fn'
    assert tasks['Transform']['inputs']['parameters']['preprocessing_fn']['runtimeValue'][
        'constant'] == 'modules.preprocessing.preprocessing_fn'
    assert 'module_file' not in json.dumps(tasks['Trainer']['inputs']['parameters'])


def test_data_and_schema_are_runtime_parameters_with_defaults(spec):
    parameters = spec['root']['inputDefinitions']['parameters']
    assert parameters['data_root'] == {'parameterType': 'STRING', 'defaultValue': '/pipeline/data/taxi'}
    assert parameters['schema_path']['defaultValue'] == '/pipeline/data/taxi/schema.pbtxt'
    tasks = spec['root']['dag']['tasks']
    assert tasks['CsvExampleGen']['inputs']['parameters']['input_base'] == {
        'componentInputParameter': 'data_root'}
    assert tasks['ImportSchemaGen']['inputs']['parameters']['schema_file'] == {
        'componentInputParameter': 'schema_path'}


def test_steps_reading_outside_state_are_never_cached(spec):
    tasks = spec['root']['dag']['tasks']
    assert tasks['BaselineModel']['cachingOptions'] == {'enableCache': False}
    assert tasks['CsvExampleGen']['cachingOptions'] == {'enableCache': False}  # latest span
    assert tasks['Trainer']['cachingOptions'] == {'enableCache': True}


def test_open_source_kfp_gets_an_example_gen_that_resolves_spans_itself(spec):
    args = container(spec, 'CsvExampleGen')['args']
    executor = args[args.index('--executor_class_path') + 1]
    assert executor == 'components.span_example_gen.executor.Executor'


def test_platform_spec_pins_the_trainer_to_gpu_nodes_and_mounts_serving(kfp_docs, spec):
    executors = kfp_docs[1]['platforms']['kubernetes']['deploymentSpec']['executors']
    trainer = executors[kfp_spec.task_executor_label(spec, 'Trainer')]
    assert trainer['nodeSelector'] == {'labels': {'pool': 'gpu'}}
    assert trainer['tolerations'] == [{'key': 'nvidia.com/gpu', 'operator': 'Exists',
                                       'effect': 'NoSchedule'}]
    mounted = {label for label, e in executors.items() if 'pvcMount' in e}
    assert mounted == {kfp_spec.task_executor_label(spec, t) for t in ('BaselineModel', 'CanaryPusher')}
    assert executors['BaselineModel_executor']['pvcMount'] == [{'constant': 'serving',
                                                                'mountPath': '/serving'}]


def test_vertex_job_carries_gpu_type_runtime_config_and_the_stock_example_gen(vertex_job):
    spec = vertex_job['pipelineSpec']
    assert vertex_job['runtimeConfig'] == {
        'gcsOutputDirectory': 'gs://bucket/tfx-canary',
        'parameterValues': {'data_root': '/pipeline/data/taxi',
                            'schema_path': '/pipeline/data/taxi/schema.pbtxt'}}
    assert container(spec, 'Trainer')['resources']['accelerator']['type'] == 'NVIDIA_TESLA_T4'
    args = container(spec, 'CsvExampleGen')['args']
    # Vertex runs ExampleGen's driver hook, so the stock executor stays.
    assert 'lifecycle' in container(spec, 'CsvExampleGen')
    assert args[args.index('--executor_class_path') + 1].startswith('tfx.components.example_gen')
    tasks = spec['root']['dag']['tasks']
    assert tasks['CsvExampleGen']['cachingOptions'] == {'enableCache': True}  # driver fingerprints
    assert tasks['BaselineModel']['cachingOptions'] == {'enableCache': False}


def test_a_resolver_is_refused_for_kfp_with_the_fix(tmp_path):
    from tfx import v1 as tfx

    def with_resolver(config):
        pipeline = create_pipeline(config)
        extra = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id('old_resolver')
        with pipeline.dsl_context_registry.temporary_mutable():
            pipeline.dsl_context_registry.put_node(extra)
        pipeline.components = pipeline.components + [extra]
        return pipeline

    with pytest.raises(kubeflow_runner.KfpCompileError, match='resolver.*BaselineModel'):
        kubeflow_runner.compile_pipeline(PipelineConfig(), kfp_config(), str(tmp_path / 'p.yaml'),
                                         pipeline_factory=with_resolver)


@pytest.mark.parametrize('target,name', [('kfp', 'p.json'), ('vertex', 'p.yaml')])
def test_output_extension_must_match_the_target(tmp_path, target, name):
    config = kfp_config() if target == 'kfp' else vertex_config()
    with pytest.raises(kubeflow_runner.KfpCompileError, match=name):
        kubeflow_runner.compile_pipeline(PipelineConfig(), config, str(tmp_path / name))


def test_pipeline_name_must_suit_kfp():
    from pipeline.configs import ConfigError
    with pytest.raises(ConfigError, match='lower-case'):
        kubeflow_runner.cluster_config(PipelineConfig(pipeline_name='Taxi_Pipeline'), kfp_config())


def test_a_push_against_a_moved_baseline_fails_the_pusher_task_on_kfp(spec, vertex_job):
    """Locally the refusal is recorded and `run` exits 3; on KFP/Vertex the task status is
    the outcome users see, so the compiled CanaryPusher fails on a stale baseline."""
    kfp_params = spec['root']['dag']['tasks']['CanaryPusher']['inputs']['parameters']
    assert kfp_params['fail_on_stale_baseline']['runtimeValue']['constant'] == 1
    vertex_params = (vertex_job['pipelineSpec']['root']['dag']['tasks']['CanaryPusher']
                     ['inputs']['parameters'])
    assert vertex_params['fail_on_stale_baseline']['runtimeValue']['constant'] == 1
