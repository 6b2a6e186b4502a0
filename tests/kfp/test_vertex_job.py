"""The compiled Vertex PipelineJob JSON read by the Vertex SDK's own loader
(`aiplatform.PipelineJob(template_path=...)`, what docs/kubeflow.md tells users
to call), offline: anonymous credentials, nothing is submitted."""
import json

import pytest

PROJECT, LOCATION = 'tfx-canary-test', 'europe-west4'


@pytest.fixture(scope='module')
def vertex_package(vertex_job, tmp_path_factory):
    path = tmp_path_factory.mktemp('vertex-sdk') / 'pipeline.json'
    path.write_text(json.dumps(vertex_job))
    return str(path)


def _load(path, **kwargs):
    from google.auth import credentials
    from google.cloud import aiplatform
    return aiplatform.PipelineJob(
        display_name='tfx-canary', template_path=path, project=PROJECT, location=LOCATION,
        credentials=credentials.AnonymousCredentials(), **kwargs)


def test_the_vertex_sdk_loads_the_job_with_its_runtime_parameters(vertex_package, vertex_job):
    job = _load(vertex_package, pipeline_root='gs://other/root',
                parameter_values={'data_root': 'gs://bucket/taxi'}).to_dict()
    assert job['pipelineSpec']['root'] == vertex_job['pipelineSpec']['root']
    runtime = job['runtimeConfig']
    assert runtime['gcsOutputDirectory'] == 'gs://other/root'
    # The override, and the compiled default of the parameter not given.
    assert runtime['parameterValues'] == {
        'data_root': 'gs://bucket/taxi',
        'schema_path': vertex_job['runtimeConfig']['parameterValues']['schema_path']}


def test_the_vertex_sdk_refuses_a_parameter_the_job_does_not_declare(vertex_package):
    with pytest.raises(ValueError, match='no_such is not found'):
        _load(vertex_package, parameter_values={'no_such': 'x'})
