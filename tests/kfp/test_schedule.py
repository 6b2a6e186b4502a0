"""`tfx-canary kfp schedule` and `kfp runs` with the real kfp.Client against the
local stand-in of the KFP v2beta1 REST API (tests/kfp/fake_kfp.py): what a
recurring run asks the server for, what `runs` shows, one clear line on failure."""
import pytest

from runners import kfp_schedule
from runners import kfp_submit
from tests.conftest import one_error_line
from tests.kfp.fake_kfp import API, FakeKfp

TOKEN = 'not-a-real-token'
RECURRING = API + '/recurringruns'


@pytest.fixture
def tfx_canary(monkeypatch, capsys):
    """`tfx-canary ARGS` through runners.cli.main -> (exit code, stdout, stderr),
    with no KFP endpoint or token leaking in from the environment."""
    from runners import cli
    monkeypatch.delenv(kfp_submit.TOKEN_ENV, raising=False)
    monkeypatch.delenv('KF_PIPELINES_ENDPOINT', raising=False)

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_schedule_creates_a_daily_recurring_run_of_the_package(tfx_canary, kfp_package, kfp_docs,
                                                               tmp_path):
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN)
    with FakeKfp(token=TOKEN) as kfp:
        code, out, _ = tfx_canary('kfp', 'schedule', '--host', kfp.url, '--package', kfp_package,
                                  '--cron', '0 3 * * *', '--experiment', 'nightly',
                                  '--param', 'data_root=gs://bucket/taxi',
                                  '--token-file', str(token_file))
        (create,) = kfp.calls('POST', RECURRING)
    assert code == 0
    body = create['body']
    # Standard cron "03:00 daily", in KFP's seconds-first format: sent as is, KFP
    # would read minute 3 of every hour (kubeflow/pipelines#5014).
    assert body['trigger'] == {'cron_schedule': {'cron': '0 0 3 * * *'}}
    assert body['max_concurrency'] == 1 and body['no_catchup'] is True
    assert body['mode'] == 'ENABLE' and body['experiment_id'] == 'exp-1'
    assert body['runtime_config'] == {'parameters': {'data_root': 'gs://bucket/taxi'}}
    assert body['pipeline_spec']['pipeline_spec']['pipelineInfo'] == kfp_docs[0]['pipelineInfo']
    assert body['pipeline_spec']['platform_spec'] == kfp_docs[1]
    assert create['headers']['authorization'] == 'Bearer ' + TOKEN
    assert 'recurring run id : rr-1' in out
    assert '%s/#/recurringrun/details/rr-1' % kfp.url in out


def test_schedule_options_reach_the_server(tfx_canary, kfp_package):
    with FakeKfp(experiments=['tfx-canary']) as kfp:
        code, _, _ = tfx_canary('kfp', 'schedule', '--host', kfp.url, '--package', kfp_package,
                                '--cron', '0 30 2 * * MON-FRI', '--max-concurrency', '2',
                                '--catchup', '--name', 'weekday retrain',
                                '--pipeline-root', 'gs://other/root')
        (create,) = kfp.calls('POST', RECURRING)
        assert kfp.calls('POST', API + '/experiments') == []   # The experiment existed.
    body = create['body']
    assert code == 0
    assert body['trigger']['cron_schedule']['cron'] == '0 30 2 * * MON-FRI'   # 6 fields: as given.
    assert (body['max_concurrency'], body['no_catchup'], body['display_name']) == (
        2, False, 'weekday retrain')
    assert body['runtime_config']['pipeline_root'] == 'gs://other/root'


@pytest.mark.parametrize('cron,expected', [
    ('0 3 * *', 'expected 5 fields'),
    ('0 24 * * *', "hour '24' is not in 0-23"),
    ('0 3 * * FUNDAY', "day of week 'FUNDAY' is not in 0-6 or SUN-SAT"),
    ('0 3 31-1 * *', 'day of month range 31-1 runs backwards'),
    ('*/0 3 * * *', 'step /0 never fires'),
])
def test_a_bad_cron_is_one_line_and_nothing_is_sent(tfx_canary, kfp_package, cron, expected):
    with FakeKfp() as kfp:
        line = one_error_line(*tfx_canary('kfp', 'schedule', '--host', kfp.url,
                                          '--package', kfp_package, '--cron', cron))
        assert kfp.requests == []   # Checked before the network.
    assert expected in line and repr(cron) in line


@pytest.mark.parametrize('value', ['0', '11'])
def test_max_concurrency_outside_what_kfp_allows(tfx_canary, kfp_package, value):
    with FakeKfp() as kfp:
        line = one_error_line(*tfx_canary('kfp', 'schedule', '--host', kfp.url, '--package',
                                          kfp_package, '--cron', '@daily',
                                          '--max-concurrency', value))
        assert kfp.requests == []
    assert 'KFP allows 1 to 10' in line


def test_schedule_errors_are_one_line_like_submit(tfx_canary, kfp_package, tmp_path):
    with FakeKfp(token=TOKEN) as kfp:
        line = one_error_line(*tfx_canary('kfp', 'schedule', '--host', kfp.url,
                                          '--package', kfp_package, '--cron', '0 3 * * *'))
        assert kfp.calls('POST', RECURRING) == []
    assert 'HTTP 401' in line and '--token-file' in line
    url = kfp.url   # Stopped: nothing listens there any more.
    line = one_error_line(*tfx_canary('kfp', 'schedule', '--host', url, '--package', kfp_package,
                                      '--cron', '0 3 * * *'))
    assert line.startswith('error: cannot reach KFP at %s' % url)
    missing = str(tmp_path / 'nope.yaml')
    line = one_error_line(*tfx_canary('kfp', 'schedule', '--host', url, '--package', missing,
                                      '--cron', '0 3 * * *'))
    assert 'package %s does not exist' % missing in line and 'kfp compile' in line


def test_a_recurring_run_the_server_refuses_shows_its_message(tfx_canary, kfp_package):
    message = 'Invalid input error: The max concurrency of a recurring run is out of range'
    with FakeKfp(refuse_recurring_run=message) as kfp:
        line = one_error_line(*tfx_canary('kfp', 'schedule', '--host', kfp.url,
                                          '--package', kfp_package, '--cron', '0 3 * * *'))
    assert 'HTTP 400' in line and message in line and kfp.url in line


def test_runs_lists_schedules_and_runs_newest_first(tfx_canary, kfp_package):
    with FakeKfp(run_states=('RUNNING',)) as kfp:
        assert tfx_canary('kfp', 'schedule', '--host', kfp.url, '--package', kfp_package,
                          '--cron', '0 3 * * *', '--name', 'nightly')[0] == 0
        assert tfx_canary('kfp', 'submit', '--host', kfp.url, '--package', kfp_package,
                          '--run-name', 'manual')[0] == 0
        kfp.start_scheduled_run('rr-1')
        kfp.start_scheduled_run('rr-1')
        code, out, _ = tfx_canary('kfp', 'runs', '--host', kfp.url, '--limit', '2')
        (listed,) = kfp.calls('GET', API + '/runs')
    assert code == 0
    assert listed['query'] == {'experiment_id': 'exp-1', 'page_size': '2',
                               'sort_by': 'created_at desc'}
    schedules = out[out.index('Schedules'):out.index('Runs')]
    assert 'rr-1' in schedules and 'ENABLED' in schedules and 'cron "0 0 3 * * *"' in schedules
    runs = [line.split() for line in out[out.index('Runs'):].splitlines()[1:]]
    # run-3 and run-2 came from the schedule; run-1 (manual, the oldest) is past --limit 2.
    assert [r[0] for r in runs] == ['run-3', 'run-2']
    assert all(r[1] == 'RUNNING' and r[-1] == 'rr-1)' for r in runs)


def test_runs_shows_one_run_and_its_error(tfx_canary, kfp_package):
    with FakeKfp(run_states=('FAILED',), run_error='CanaryPusher: stable moved') as kfp:
        assert tfx_canary('kfp', 'submit', '--host', kfp.url, '--package', kfp_package)[0] == 0
        code, out, _ = tfx_canary('kfp', 'runs', '--host', kfp.url, '--run-id', 'run-1')
    assert code == 0
    assert out.split()[:2] == ['run-1', 'FAILED'] and 'error: CanaryPusher: stable moved' in out


def test_runs_of_an_unknown_experiment_is_one_line(tfx_canary):
    with FakeKfp() as kfp:
        line = one_error_line(*tfx_canary('kfp', 'runs', '--host', kfp.url,
                                          '--experiment', 'nope'))
    assert "has no experiment 'nope'" in line


@pytest.mark.parametrize('given,sent', [
    ('0 3 * * *', '0 0 3 * * *'),
    ('  15 */6 * * 1-5 ', '0 15 */6 * * 1-5'),
    ('0 0 3 ? * SUN', '0 0 3 ? * SUN'),
    ('@DAILY', '@daily'),
])
def test_kfp_cron(given, sent):
    assert kfp_schedule.kfp_cron(given) == sent
