"""Shared fixtures for the KFP / Vertex tests: real kfp SDK, real TFX compile.

TRANSITIONAL: until /tmp/baseline_wiring.diff is applied to pipeline/pipeline.py,
`create_pipeline` still builds a tfx.dsl.Resolver for the baseline, which
open-source KFP cannot run. `create_pipeline_with_baseline` applies the same
wiring to the built pipeline (Resolver -> BaselineModel, baseline-aware
Evaluator and Trainer executors); once pipeline.py has no Resolver it returns
create_pipeline's result untouched, so these tests keep passing either way.
"""
import json

import pytest
import yaml

from pipeline import pipeline as pipeline_lib
from pipeline.configs import PipelineConfig
from pipeline.kubeflow_configs import KubeflowConfig
from runners import kubeflow_runner

_ORIGINAL_CREATE_PIPELINE = pipeline_lib.create_pipeline


def create_pipeline_with_baseline(config, metadata_connection_config=None):
    from tfx import v1 as tfx
    from tfx.dsl.components.common import resolver

    from components.baseline import component as baseline

    built = _ORIGINAL_CREATE_PIPELINE(config, metadata_connection_config)
    resolvers = [c for c in built.components if isinstance(c, resolver.Resolver)]
    if not resolvers:
        return built  # The diff is applied: nothing to rewire.
    (old,) = resolvers
    new = baseline.create_baseline_component(config)
    components = []
    for component in built.components:
        if component is old:
            components.append(new)
            continue
        for key, channel in list(component.inputs.items()):
            if getattr(channel, 'producer_component_id', None) == old.id:
                component.inputs[key] = new.outputs['model']
                component.remove_upstream_node(old)
                component.add_upstream_node(new)
        if isinstance(component, tfx.components.Evaluator):
            spec = baseline.BaselineAwareEvaluator.EXECUTOR_SPEC.copy()
            spec.add_beam_pipeline_args(component.executor_spec.beam_pipeline_args)
            component.executor_spec = spec
        if isinstance(component, tfx.components.Trainer):
            component.executor_spec = baseline.baseline_trainer_executor_spec()
        components.append(component)
    # Same pipeline object: its DSL registry (used by the KFP compiler) must
    # know the new node instead of the old one.
    registry = built.dsl_context_registry
    with registry.temporary_mutable():
        registry.remove_nodes([old.id])
        registry.put_node(new)
    built.components = components
    return built


@pytest.fixture
def wired(monkeypatch):
    """Every create_pipeline call in the test builds the BaselineModel wiring."""
    monkeypatch.setattr(pipeline_lib, 'create_pipeline', create_pipeline_with_baseline)
    return create_pipeline_with_baseline


def kfp_config(**overrides):
    values = dict(target='kfp', image='registry.example/ml/tfx-canary:1.0',
                  pipeline_root='gs://bucket/tfx-canary', serving_pvc='serving')
    values.update(overrides)
    return KubeflowConfig(**values)


def vertex_config(**overrides):
    values = dict(target='vertex', image='europe-docker.pkg.dev/p/ml/tfx-canary:1.0',
                  pipeline_root='gs://bucket/tfx-canary', serving_root='/gcs/bucket/serving')
    values.update(overrides)
    return KubeflowConfig(**values)


# Compiled once per session: the real TFX compile, read back from disk.

@pytest.fixture(scope='session')
def kfp_package(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('kfp') / 'pipeline.yaml')
    kubeflow_runner.compile_pipeline(
        PipelineConfig(), kfp_config(gpu_count=2, gpu_node_selector={'pool': 'gpu'}), path,
        pipeline_factory=create_pipeline_with_baseline)
    return path


@pytest.fixture(scope='session')
def kfp_docs(kfp_package):
    with open(kfp_package) as f:
        return list(yaml.safe_load_all(f))


@pytest.fixture(scope='session')
def spec(kfp_docs):
    """The compiled KFP PipelineSpec (first YAML document), as a dict."""
    return kfp_docs[0]


@pytest.fixture(scope='session')
def vertex_job(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('vertex') / 'pipeline.json')
    kubeflow_runner.compile_pipeline(PipelineConfig(span=2), vertex_config(), path,
                                     pipeline_factory=create_pipeline_with_baseline)
    with open(path) as f:
        return json.load(f)
