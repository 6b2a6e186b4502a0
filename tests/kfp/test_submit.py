"""`tfx-canary kfp submit` with the real kfp.Client against a local stand-in of
the KFP v2beta1 REST API: what is uploaded, and one clear line on failure."""
import pytest
import yaml

from runners import cli
from runners import kfp_submit
from tests.kfp.fake_kfp import API, FakeKfp

TOKEN = 'not-a-real-token'


@pytest.fixture
def tfx_canary(monkeypatch):
    """runners.cli.main with no KFP endpoint or token leaking in from the environment."""
    monkeypatch.delenv(kfp_submit.TOKEN_ENV, raising=False)
    monkeypatch.delenv('KF_PIPELINES_ENDPOINT', raising=False)
    return cli.main


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / 'token'
    path.write_text(TOKEN + '\n')
    return str(path)


def test_submit_uploads_spec_parameters_experiment_and_run_name(
        tfx_canary, kfp_package, kfp_docs, token_file, capsys):
    with FakeKfp(token=TOKEN) as kfp:
        code = tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                           '--experiment', 'canary-exp', '--run-name', 'nightly-42',
                           '--param', 'data_root=gs://bucket/taxi', '--token-file', token_file])
        assert code == 0
        (create,) = kfp.calls('POST', API + '/runs')
        experiments = kfp.calls('POST', API + '/experiments')
    body = create['body']
    assert create['headers']['authorization'] == 'Bearer ' + TOKEN
    assert body['display_name'] == 'nightly-42'
    assert body['experiment_id'] == 'exp-1'
    assert [e['body']['display_name'] for e in experiments] == ['canary-exp']
    assert body['runtime_config'] == {'parameters': {'data_root': 'gs://bucket/taxi'}}
    # The uploaded spec is the package: PipelineSpec plus the Kubernetes platform spec.
    uploaded = body['pipeline_spec']
    assert uploaded['pipeline_spec']['pipelineInfo'] == kfp_docs[0]['pipelineInfo']
    assert sorted(uploaded['pipeline_spec']['root']['dag']['tasks']) == sorted(
        kfp_docs[0]['root']['dag']['tasks'])
    assert uploaded['platform_spec'] == kfp_docs[1]
    out = capsys.readouterr().out
    assert 'run id : run-1' in out and '%s/#/runs/details/run-1' % kfp.url in out


def test_existing_experiment_is_reused_and_token_comes_from_the_env(
        tfx_canary, kfp_package, token_file, monkeypatch):
    monkeypatch.setenv(kfp_submit.TOKEN_ENV, token_file)
    with FakeKfp(token=TOKEN, experiments=['canary-exp']) as kfp:
        assert tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                           '--experiment', 'canary-exp']) == 0
        assert kfp.calls('POST', API + '/experiments') == []
        assert kfp.calls('POST', API + '/runs')[0]['body']['experiment_id'] == 'exp-1'


def test_wait_reports_states_and_succeeds(tfx_canary, kfp_package, capsys):
    with FakeKfp(run_states=('PENDING', 'RUNNING', 'RUNNING', 'SUCCEEDED')) as kfp:
        assert tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                           '--wait', '--poll-seconds', '0.01']) == 0
        assert len(kfp.calls('GET', API + '/runs/run-1')) == 4
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.splitlines() if ' s  ' in line] == [
        'PENDING', 'RUNNING', 'SUCCEEDED']


def test_wait_exits_non_zero_when_the_run_fails(tfx_canary, kfp_package, capsys):
    with FakeKfp(run_states=('RUNNING', 'FAILED'), run_error='Trainer: OOMKilled') as kfp:
        code = tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                           '--wait', '--poll-seconds', '0.01'])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count('\n') == 1 and err.startswith('error: run run-1 ended FAILED')
    assert 'Trainer: OOMKilled' in err


@pytest.mark.parametrize('server,flags,expected', [
    (dict(token=TOKEN), [], 'HTTP 401: the credentials are missing or invalid; pass --token-file'),
    (dict(not_found=True), [], 'HTTP 404: it does not look like a Kubeflow Pipelines v2 API'),
])
def test_http_errors_give_one_clear_line(tfx_canary, kfp_package, capsys, server, flags,
                                         expected):
    with FakeKfp(**server) as kfp:
        code = tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package] + flags)
        assert kfp.calls('POST', API + '/runs') == []
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and kfp.url in err and expected in err


def test_server_down_gives_one_clear_line(tfx_canary, kfp_package, capsys):
    with FakeKfp() as kfp:
        url = kfp.url   # The port is free again once the stand-in stops.
    code = tfx_canary(['kfp', 'submit', '--host', url, '--package', kfp_package])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert err.startswith('error: cannot reach KFP at %s' % url) and 'port-forward' in err


@pytest.mark.parametrize('argv_tail,expected', [
    (['--param', 'no_such=1'], 'no such runtime parameter (it has: data_root, schema_path)'),
    (['--param', 'data_root'], 'use KEY=VALUE'),
    (['--token-file', '/nonexistent/token'], 'cannot read the KFP token file /nonexistent/token'),
])
def test_bad_arguments_fail_before_anything_is_submitted(tfx_canary, kfp_package, capsys,
                                                         argv_tail, expected):
    with FakeKfp() as kfp:
        code = tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package] + argv_tail)
        assert kfp.calls('POST', API + '/runs') == []
    err = capsys.readouterr().err
    assert code == 2 and expected in err


def test_a_package_with_a_resolver_is_refused(tfx_canary, kfp_docs, tmp_path, capsys):
    spec = yaml.safe_load(yaml.safe_dump(kfp_docs[0]))
    spec['deploymentSpec']['executors']['BaselineModel_executor'] = {'resolver': {}}
    path = tmp_path / 'old.yaml'
    path.write_text(yaml.safe_dump(spec))
    assert tfx_canary(['kfp', 'submit', '--host', 'http://127.0.0.1:1', '--package', str(path)]) == 2
    assert 'cannot run (BaselineModel_executor)' in capsys.readouterr().err


def test_a_vertex_job_is_not_a_kfp_package(tfx_canary, tmp_path, capsys):
    path = tmp_path / 'job.json'
    path.write_text('{}')
    assert tfx_canary(['kfp', 'submit', '--host', 'http://127.0.0.1:1', '--package', str(path)]) == 2
    assert 'compile with --target kfp' in capsys.readouterr().err


def test_compile_command_writes_the_package(tfx_canary, tmp_path, capsys):
    output = tmp_path / 'p.yaml'
    code = tfx_canary(['kfp', 'compile', '--target', 'kfp', '--image', 'registry.example/tc:1',
                       '--pipeline-root', 'gs://b/root', '--serving-pvc', 'serving',
                       '--gpu-count', '0', '--output', str(output)])
    assert code == 0 and output.is_file()
    out = capsys.readouterr().out
    assert 'runtime parameter data_root' in out
    trainer = yaml.safe_load_all(output.read_text()).__next__()['deploymentSpec']['executors'][
        'Trainer_executor']['container']['resources']
    assert 'accelerator' not in trainer


def test_compile_command_config_errors_are_one_line(tfx_canary, tmp_path, capsys):
    code = tfx_canary(['kfp', 'compile', '--pipeline-root', 'gs://b/root',
                       '--output', str(tmp_path / 'p.yaml')])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: kubeflow config field image=None')


def test_submit_without_a_package_compiles_the_kfp_target(tfx_canary, capsys):
    with FakeKfp() as kfp:
        code = tfx_canary(['kfp', 'submit', '--host', kfp.url, '--image', 'registry.example/tc:1',
                           '--pipeline-root', 'gs://b/root', '--serving-pvc', 'serving'])
        (create,) = kfp.calls('POST', API + '/runs')
    assert code == 0
    spec = create['body']['pipeline_spec']['pipeline_spec']
    assert 'BaselineModel' in spec['root']['dag']['tasks']


def test_pipeline_root_can_be_overridden_per_run(tfx_canary, kfp_package):
    with FakeKfp() as kfp:
        assert tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                           '--pipeline-root', 'gs://other/root']) == 0
        (create,) = kfp.calls('POST', API + '/runs')
    assert create['body']['runtime_config'] == {'pipeline_root': 'gs://other/root',
                                                'parameters': {}}


def test_wait_gives_up_after_the_timeout_with_the_run_link():
    class Client:
        def get_run(self, run_id):
            return type('Run', (), {'state': 'RUNNING'})()

    ticks = iter(range(0, 1000, 60))
    with pytest.raises(kfp_submit.KfpSubmitError, match='still RUNNING after 120 s.*runs/details/r1'):
        kfp_submit.follow(Client(), 'http://kfp', 'r1', timeout=120, poll_seconds=60,
                          out=lambda line: None, clock=lambda: next(ticks), sleep=lambda s: None)


@pytest.mark.parametrize('final', ['CANCELED', 'SKIPPED'])
def test_wait_exits_non_zero_when_the_run_does_not_succeed(tfx_canary, kfp_package, capsys,
                                                           final):
    with FakeKfp(run_states=('RUNNING', final)) as kfp:
        code = tfx_canary(['kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                           '--wait', '--poll-seconds', '0.01'])
        # A terminal state ends the wait: no polling after it.
        assert len(kfp.calls('GET', API + '/runs/run-1')) == 2
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count('\n') == 1 and err.startswith('error: run run-1 ended %s' % final)
    assert out.splitlines()[-1].split()[-1] == final
