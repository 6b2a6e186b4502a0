"""Scheduled retraining on a KFP cluster: `kfp schedule` (a recurring run) and
`kfp runs` (schedules and runs, with their states).

Uses the real `kfp.Client` (v2beta1 REST API) the way kfp_submit does, with
its checks and its one-line errors.

Cron: KFP's scheduler parses cron with robfig/cron's *seconds-first* format
(6 fields). A standard 5-field expression ("0 3 * * *") is accepted by the
API server but read as "second 0, minute 3, every hour" - a retrain every
hour instead of once a day (kubeflow/pipelines#5014). So 5 fields are taken
as standard cron and sent with a leading "0" seconds field; 6 are sent as
given. The fields are checked here because the server checks only syntax
and answers with a generic 400.
"""
import contextlib
import dataclasses
import datetime
import io
import re
from typing import Tuple

from runners import kfp_submit
from runners.kfp_submit import KfpSubmitError

# (name, lowest, highest) of KFP's six cron fields.
CRON_FIELDS = (('second', 0, 59), ('minute', 0, 59), ('hour', 0, 23),
               ('day of month', 1, 31), ('month', 1, 12), ('day of week', 0, 6))
_FIELD_NAMES = {
    4: ('JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'),
    5: ('SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'),
}
_FIRST_VALUE = {4: 1, 5: 0}
CRON_DESCRIPTORS = ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight',
                    '@hourly')
# The KFP API server refuses a recurring run outside [1, 10] concurrent runs.
MAX_CONCURRENCY_RANGE = (1, 10)
_ITEM_RE = re.compile(r'^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/(\d+))?$')


def _value(token, index, name, low, high, expression):
    names = _FIELD_NAMES.get(index, ())
    if token.upper() in names:
        return names.index(token.upper()) + _FIRST_VALUE[index]
    if not token.isdigit() or not low <= int(token) <= high:
        raise KfpSubmitError('--cron %r: %s %r is not in %d-%d%s' % (
            expression, name, token, low, high, ' or %s-%s' % (names[0], names[-1]) if names else ''))
    return int(token)


def _check_field(field, index, expression):
    name, low, high = CRON_FIELDS[index]
    if field == '?' and index in (3, 5):
        return
    for item in field.split(','):
        match = _ITEM_RE.match(item)
        if not match:
            raise KfpSubmitError('--cron %r: %s %r is not *, N, N-M, */S or a list of those'
                                 % (expression, name, item))
        if match.group(4) is not None and int(match.group(4)) == 0:
            raise KfpSubmitError('--cron %r: %s step /0 never fires' % (expression, name))
        if match.group(1) != '*':
            bounds = [_value(t, index, name, low, high, expression)
                      for t in match.group(1).split('-')]
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                raise KfpSubmitError('--cron %r: %s range %s runs backwards'
                                     % (expression, name, match.group(1)))


def kfp_cron(expression) -> str:
    """The cron expression to send to KFP (6 fields, seconds first), or
    KfpSubmitError naming the field that is wrong."""
    expression = (expression or '').strip()
    if expression.lower() in CRON_DESCRIPTORS:
        return expression.lower()
    fields = expression.split()
    if len(fields) == 5:
        fields = ['0'] + fields   # Standard cron: run at second 0 of the minute given.
    elif len(fields) != 6:
        raise KfpSubmitError(
            '--cron %r: expected 5 fields (minute hour day-of-month month day-of-week, e.g. '
            '"0 3 * * *" for 03:00 every day) or KFP\'s 6 (seconds first)' % expression)
    for index, field in enumerate(fields):
        _check_field(field, index, expression)
    return ' '.join(fields)


def check_max_concurrency(value):
    low, high = MAX_CONCURRENCY_RANGE
    if not low <= value <= high:
        raise KfpSubmitError('--max-concurrency %d: KFP allows %d to %d concurrent runs of a '
                             'schedule' % (value, low, high))
    return value


def recurring_run_link(host, recurring_run_id, ui_host=None):
    return '%s/#/recurringrun/details/%s' % ((ui_host or host).rstrip('/'), recurring_run_id)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What `kfp schedule` created."""
    recurring_run_id: str
    experiment_id: str
    name: str
    cron: str               # As sent to KFP (6 fields).
    max_concurrency: int
    catchup: bool


def _experiment_id(client, host, name, namespace, create):
    """The id of experiment `name`; None when it does not exist and `create` is False."""
    with kfp_submit.api_errors(host, 'looking up experiment %s' % name), \
            contextlib.redirect_stdout(io.StringIO()):   # The client prints its own links.
        if create:
            return client.create_experiment(name, namespace=namespace).experiment_id
        try:
            return client.get_experiment(experiment_name=name, namespace=namespace).experiment_id
        except ValueError:   # kfp: "No experiment is found with name ..."
            return None


def schedule(host, package, cron, experiment, name=None, params=None, token_file=None,
             namespace=None, pipeline_root=None, max_concurrency=1, catchup=False,
             ui_host=None, out=print) -> Schedule:
    """The `kfp schedule` command: a recurring run of `package` on `cron`."""
    token = kfp_submit.read_token(token_file)
    spec = kfp_submit.load_package(package)
    arguments = kfp_submit.typed_params(spec, params)
    cron = kfp_cron(cron)
    check_max_concurrency(max_concurrency)
    name = name or '%s on %s' % (spec['pipelineInfo']['name'], cron)
    kfp_submit.check_host(host, token)
    client = kfp_submit.make_client(host, token, namespace, ui_host)
    experiment_id = _experiment_id(client, host, experiment, namespace, create=True)
    with kfp_submit.api_errors(host, 'creating the recurring run'):
        created = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron,
            max_concurrency=max_concurrency, no_catchup=not catchup, params=arguments,
            pipeline_package_path=package, pipeline_root=pipeline_root, enabled=True)
    result = Schedule(created.recurring_run_id, experiment_id, name, cron, max_concurrency, catchup)
    out('Recurring run created in experiment %s' % experiment)
    out('  recurring run id : %s' % result.recurring_run_id)
    out('  schedule         : cron "%s" (KFP fields: second minute hour day month weekday; '
        'the cluster scheduler\'s time zone, usually UTC)' % cron)
    out('  overlap          : at most %d run(s) at a time; %s' % (
        max_concurrency, 'missed runs are caught up' if catchup else 'missed runs are skipped'))
    out('  UI               : %s' % recurring_run_link(host, result.recurring_run_id, ui_host))
    return result


# ------------------------------------------------------------------ listing

def _when(value):
    if isinstance(value, datetime.datetime):
        if value.year < 2000:   # KFP's zero time: not finished yet.
            return '-'
        return value.strftime('%Y-%m-%d %H:%M:%S')
    return str(value) if value else '-'


def _cron_of(recurring_run):
    trigger = getattr(recurring_run, 'trigger', None)
    cron = getattr(trigger, 'cron_schedule', None) if trigger else None
    if cron is not None and cron.cron:
        return 'cron "%s"' % cron.cron
    periodic = getattr(trigger, 'periodic_schedule', None) if trigger else None
    if periodic is not None and periodic.interval_second:
        return 'every %s s' % periodic.interval_second
    return '-'


def _schedule_lines(recurring_runs):
    lines = ['Schedules (recurring runs)']
    if not recurring_runs:
        return lines + ['  none']
    for r in recurring_runs:
        lines.append('  %-12s %-9s %-22s max %s at a time  %s' % (
            r.recurring_run_id, r.status or '-', _cron_of(r), r.max_concurrency or '-',
            r.display_name or ''))
    return lines


def _run_lines(runs):
    lines = ['Runs (newest first)']
    if not runs:
        return lines + ['  none']
    for r in runs:
        error = getattr(getattr(r, 'error', None), 'message', None)
        lines.append('  %-12s %-10s created %s  finished %s  %s%s%s' % (
            r.run_id, kfp_submit.state_of(r), _when(r.created_at), _when(r.finished_at),
            r.display_name or '', '  (schedule %s)' % r.recurring_run_id
            if r.recurring_run_id else '', '  error: %s' % error if error else ''))
    return lines


def list_runs(host, experiment, token_file=None, namespace=None, limit=20, run_id=None,
              ui_host=None, out=print) -> Tuple[list, list]:
    """The `kfp runs` command: the experiment's schedules and newest runs, or
    one run (`run_id`). Returns (recurring runs, runs)."""
    token = kfp_submit.read_token(token_file)
    if limit < 1:
        raise KfpSubmitError('--limit %d: list at least 1 run' % limit)
    kfp_submit.check_host(host, token)
    client = kfp_submit.make_client(host, token, namespace, ui_host)
    if run_id:
        with kfp_submit.api_errors(host, 'reading run %s' % run_id):
            run = client.get_run(run_id)
        out('\n'.join(_run_lines([run])[1:] + ['  UI: %s' % kfp_submit.run_link(host, run_id,
                                                                              ui_host)]))
        return [], [run]
    experiment_id = _experiment_id(client, host, experiment, namespace, create=False)
    if experiment_id is None:
        raise KfpSubmitError('KFP at %s has no experiment %r: nothing was submitted or scheduled '
                             'there under that name (check --experiment)' % (host, experiment))
    with kfp_submit.api_errors(host, 'listing the recurring runs'):
        recurring = client.list_recurring_runs(experiment_id=experiment_id,
                                               page_size=100).recurring_runs or []
    with kfp_submit.api_errors(host, 'listing the runs'):
        runs = client.list_runs(experiment_id=experiment_id, page_size=limit,
                                sort_by='created_at desc').runs or []
    out('Experiment %s (%s) at %s' % (experiment, experiment_id, host))
    out('\n'.join(_schedule_lines(recurring) + _run_lines(runs)))
    return recurring, runs


# For `kfp schedule --help`: how a scheduled run meets a rollout in progress.
OVERLAP_NOTE = (
    'A scheduled run judges its model against the stable version serving when its BaselineModel '
    'step runs; the CanaryPusher stages only if that version still serves (else the task fails: '
    're-run). A blessed new model replaces a live canary, whose traffic restarts at the canary '
    'percent; see docs/kubeflow.md "Scheduled retraining".')
