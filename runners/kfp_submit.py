"""Start (and optionally follow) a run on a Kubeflow Pipelines v2 cluster.

Uses the real `kfp.Client` (v2beta1 REST API). Before creating the client we
probe `/apis/v2beta1/healthz` once ourselves: the client's own health check
retries five times with 5 s sleeps and then raises a bare TimeoutError, which
is neither fast nor clear. Every failure becomes a KfpSubmitError naming the
host and what to do.
"""
import contextlib
import datetime
import io
import json
import os
import time
import urllib.error
import urllib.request

from common.errors import TfxCanaryError
from runners import kfp_spec

TOKEN_ENV = 'KF_PIPELINES_SA_TOKEN_PATH'
HEALTHZ_PATH = '/apis/v2beta1/healthz'
TERMINAL_STATES = ('SUCCEEDED', 'FAILED', 'CANCELED', 'SKIPPED')
_PARAMETER_PARSERS = {
    'STRING': str, 'NUMBER_INTEGER': int, 'NUMBER_DOUBLE': float,
    'BOOLEAN': lambda v: {'true': True, 'false': False}[v.lower()],
}


class KfpSubmitError(TfxCanaryError):
    """Submitting to, or following a run on, a KFP cluster failed."""


class KfpRunFailed(KfpSubmitError):
    """The run ended in a state other than SUCCEEDED."""


def read_token(token_file=None):
    """The bearer token from --token-file or $KF_PIPELINES_SA_TOKEN_PATH, else None."""
    path = token_file or os.environ.get(TOKEN_ENV)
    if not path:
        return None
    source = '--token-file' if token_file else '$%s' % TOKEN_ENV
    try:
        with open(path) as f:
            token = f.read().strip()
    except OSError as e:
        raise KfpSubmitError('cannot read the KFP token file %s (from %s): %s: point it at a '
                             'file holding a bearer token' % (path, source, e.strerror)) from e
    if not token:
        raise KfpSubmitError('the KFP token file %s (from %s) is empty' % (path, source))
    return token


def server_message(body):
    """The API server's own error message from an error response body, if any."""
    try:
        parsed = json.loads(body or '')
    except (TypeError, ValueError):
        return None
    if not isinstance(parsed, dict):
        return None
    message = parsed.get('message') or parsed.get('error')
    return ' '.join(str(message).split())[:300] if message else None


def explain_status(host, status, action, detail=None):
    """One line for an HTTP error status from the KFP API (`detail`: the
    server's own message, shown for requests it refused as invalid)."""
    if status == 400:
        return ('KFP at %s refused %s with HTTP 400%s: fix the request (see the message) and '
                'retry' % (host, action, ': %s' % detail if detail else ''))
    if status in (401, 403):
        return ('KFP at %s rejected %s with HTTP %d: the credentials are missing or invalid; '
                'pass --token-file or set $%s to a file with a valid bearer token'
                % (host, action, status, TOKEN_ENV))
    if status == 404:
        return ('%s answered %s with HTTP 404: it does not look like a Kubeflow Pipelines v2 API; '
                'check --host (the KFP API or UI address, e.g. http://localhost:8080 after '
                '`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`) and that KFP is >= 2.0'
                % (host, action))
    return ('KFP at %s failed %s with HTTP %d: check the ml-pipeline API server logs '
            '(kubectl -n kubeflow logs deploy/ml-pipeline)' % (host, action, status))


def unreachable(host, reason):
    return ('cannot reach KFP at %s (%s): check --host, and that the API is reachable from '
            'here (e.g. `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`)'
            % (host, reason))


def check_host(host, token=None, timeout=10.0):
    """Fails fast and clearly if `host` is not a reachable, authorised KFP v2 API."""
    if not host:
        raise KfpSubmitError('no KFP host: pass --host URL or set $KF_PIPELINES_ENDPOINT')
    if not host.startswith(('http://', 'https://')):
        raise KfpSubmitError('--host %s: give the full URL, e.g. http://localhost:8080' % host)
    request = urllib.request.Request(host.rstrip('/') + HEALTHZ_PATH)
    if token:
        request.add_header('Authorization', 'Bearer ' + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as e:
        raise KfpSubmitError(explain_status(
            host, e.code, 'the health check (GET %s)' % HEALTHZ_PATH)) from None
    except (urllib.error.URLError, OSError) as e:
        raise KfpSubmitError(unreachable(host, getattr(e, 'reason', e))) from None


def load_package(package):
    """The PipelineSpec of a KFP YAML package, checked to be runnable on KFP."""
    if not os.path.isfile(package):
        raise KfpSubmitError('package %s does not exist: compile it with '
                             '`tfx-canary kfp compile --target kfp --output %s`' % (package, package))
    if not package.endswith(('.yaml', '.yml')):
        raise KfpSubmitError('package %s is not a KFP YAML package (a Vertex PipelineJob JSON is '
                             'submitted to Vertex AI, not KFP): compile with --target kfp' % package)
    from kfp.client import client as kfp_client
    from google.protobuf import json_format
    try:
        # The client's own reader, so we check exactly what it will upload.
        doc = kfp_client._extract_pipeline_yaml(package)  # pylint: disable=protected-access
        spec = json_format.MessageToDict(doc.pipeline_spec)
    except Exception as e:  # yaml, protobuf or KFP's own ValueError: all mean "bad file"
        raise KfpSubmitError('package %s is not a valid KFP pipeline package: %s' % (package, e)) from e
    unsupported = kfp_spec.non_kfp_executors(spec)
    if unsupported:
        raise KfpSubmitError('package %s has executors open-source KFP cannot run (%s): recompile '
                             'with `tfx-canary kfp compile --target kfp`'
                             % (package, ', '.join(unsupported)))
    return spec


def typed_params(spec, params):
    """--param strings converted to the pipeline's parameter types."""
    types = kfp_spec.parameter_types(spec)
    result = {}
    for name, value in (params or {}).items():
        if name not in types:
            raise KfpSubmitError('--param %s: the pipeline has no such runtime parameter (it has: %s)'
                                 % (name, ', '.join(sorted(types)) or 'none'))
        try:
            result[name] = _PARAMETER_PARSERS.get(types[name], str)(value)
        except (KeyError, ValueError):
            raise KfpSubmitError('--param %s=%s: expected a %s value'
                                 % (name, value, types[name])) from None
    return result


@contextlib.contextmanager
def api_errors(host, action):
    """Turns kfp_server_api / urllib3 failures into one clear KfpSubmitError."""
    import kfp_server_api
    import urllib3
    try:
        yield
    except kfp_server_api.ApiException as e:
        raise KfpSubmitError(explain_status(host, e.status or 0, action,
                                            server_message(e.body))) from None
    except urllib3.exceptions.HTTPError as e:
        raise KfpSubmitError(unreachable(host, e)) from None


def make_client(host, token=None, namespace=None, ui_host=None):
    import warnings

    import kfp
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        with api_errors(host, 'the client set-up'), contextlib.redirect_stdout(io.StringIO()):
            return kfp.Client(host=host, existing_token=token, namespace=namespace or 'kubeflow',
                              ui_host=ui_host)


def run_link(host, run_id, ui_host=None):
    return '%s/#/runs/details/%s' % ((ui_host or host).rstrip('/'), run_id)


def submit(client, host, package, arguments, experiment, run_name, namespace=None,
           pipeline_root=None):
    """Starts the run; returns its id. Creates the experiment if missing."""
    # The client prints its own "Experiment details:" lines; we print ours.
    with api_errors(host, 'creating the run'), contextlib.redirect_stdout(io.StringIO()):
        result = client.create_run_from_pipeline_package(
            package, arguments=arguments, run_name=run_name, experiment_name=experiment,
            namespace=namespace, pipeline_root=pipeline_root)
    return result.run_id


def state_of(run):
    state = getattr(run, 'state', None)
    return str(state).upper() if state else 'PENDING'


def follow(client, host, run_id, timeout, poll_seconds, ui_host=None, out=print,
           clock=time.monotonic, sleep=time.sleep):
    """Polls until the run ends; prints each state change; returns the final run."""
    started = clock()
    last = None
    while True:
        with api_errors(host, 'reading run %s' % run_id):
            run = client.get_run(run_id)
        state = state_of(run)
        if state != last:
            out('  %6.0f s  %s' % (clock() - started, state))
            last = state
        if state in TERMINAL_STATES:
            return run
        if clock() - started > timeout:
            raise KfpSubmitError('run %s still %s after %.0f s; it keeps running: follow it at %s'
                                 % (run_id, state, timeout, run_link(host, run_id, ui_host)))
        sleep(poll_seconds)


def submit_and_report(host, package, experiment, run_name=None, params=None, token_file=None,
                      namespace=None, pipeline_root=None, wait=False, timeout=6 * 3600,
                      poll_seconds=20.0, ui_host=None, out=print):
    """The `kfp submit` command: returns 0, or raises KfpSubmitError."""
    # Everything that can be checked locally is, before touching the network.
    token = read_token(token_file)
    spec = load_package(package)
    arguments = typed_params(spec, params)
    run_name = run_name or '%s %s' % (spec['pipelineInfo']['name'],
                                      datetime.datetime.now().strftime('%Y-%m-%d %H-%M-%S'))
    check_host(host, token)
    client = make_client(host, token, namespace, ui_host)
    run_id = submit(client, host, package, arguments, experiment, run_name, namespace,
                    pipeline_root)
    out('Run started in experiment %s' % experiment)
    out('  run id : %s' % run_id)
    out('  UI     : %s' % run_link(host, run_id, ui_host))
    if not wait:
        return 0
    run = follow(client, host, run_id, timeout, poll_seconds, ui_host, out=out)
    state = state_of(run)
    if state != 'SUCCEEDED':
        error = getattr(run, 'error', None)
        detail = getattr(error, 'message', None) if error else None
        raise KfpRunFailed('run %s ended %s%s: see %s' % (
            run_id, state, ' (%s)' % detail if detail else '', run_link(host, run_id, ui_host)))
    out('Run %s succeeded' % run_id)
    return 0
