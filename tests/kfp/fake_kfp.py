"""A local stand-in for the Kubeflow Pipelines v2beta1 REST API, for submit tests.

Implements what kfp 2.13's Client calls for `create_run_from_pipeline_package`,
`get_run`, `create_recurring_run`, `list_recurring_runs` and `list_runs`:
GET healthz, GET/POST experiments, POST runs, GET runs/{id}, GET runs
(experiment_id, page_size, sort_by "created_at desc"), POST/GET recurringruns.
Answers like the v2beta1 API server does (snake_case JSON, RFC3339 times,
int64 as strings, 400 with {error, code, message} for a refused request).
Records every request (method, path, query, headers, JSON body) so tests can
assert exactly what the real client sent. `start_scheduled_run` plays the
scheduled-workflow controller: it starts a run of a recurring run.
"""
import datetime
import http.server
import json
import threading
import urllib.parse

API = '/apis/v2beta1'


class FakeKfp:
    """Start with `with FakeKfp(...) as kfp:`; `kfp.url` is the --host to use.

    token: if set, requests without `Authorization: Bearer <token>` get 401.
    not_found: answer 404 to everything (a host that is not a KFP API).
    run_states: states GET runs/{id} reports, one per call (the last repeats).
    """

    def __init__(self, token=None, not_found=False, run_states=('RUNNING', 'SUCCEEDED'),
                 run_error=None, experiments=(), refuse_recurring_run=None):
        self.token = token
        self.not_found = not_found
        self.run_states = list(run_states)
        self.run_error = run_error
        # A message: POST recurringruns answers 400 with it (a request the server refuses).
        self.refuse_recurring_run = refuse_recurring_run
        self.requests = []
        self.experiments = {name: 'exp-%d' % i for i, name in enumerate(experiments, 1)}
        self.runs = {}
        self.run_records = {}        # run id -> the run as GET runs lists it
        self.recurring_runs = {}     # recurring run id -> the recurring run as stored
        self._clock = datetime.datetime(2026, 1, 5, 3, 0, 0, tzinfo=datetime.timezone.utc)
        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.02}, daemon=True)

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self._server.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _now(self):
        """A clock that ticks one minute per call, as RFC3339 (what the server writes)."""
        self._clock += datetime.timedelta(minutes=1)
        return self._clock.strftime('%Y-%m-%dT%H:%M:%SZ')

    def _new_run(self, experiment_id, display_name, recurring_run_id=None):
        run_id = 'run-%d' % (len(self.runs) + 1)
        self.runs[run_id] = list(self.run_states)
        self.run_records[run_id] = {
            'run_id': run_id, 'display_name': display_name, 'experiment_id': experiment_id,
            'created_at': self._now(), 'finished_at': '1970-01-01T00:00:00Z'}
        if recurring_run_id:
            self.run_records[run_id]['recurring_run_id'] = recurring_run_id
        return run_id

    def start_scheduled_run(self, recurring_run_id):
        """Starts a run of a recurring run, as KFP's scheduler does when the cron fires."""
        recurring = self.recurring_runs[recurring_run_id]
        return self._new_run(recurring['experiment_id'], '%s-%s' % (
            recurring['display_name'], len(self.runs) + 1), recurring_run_id)

    def calls(self, method=None, path=None):
        return [r for r in self.requests
                if (method is None or r['method'] == method) and (path is None or r['path'] == path)]

    # ------------------------------------------------------------- handler

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # Keep pytest output clean.
                pass

            def _record(self, method):
                parsed = urllib.parse.urlparse(self.path)
                length = int(self.headers.get('Content-Length') or 0)
                raw = self.rfile.read(length) if length else b''
                request = {'method': method, 'path': parsed.path,
                           'query': dict(urllib.parse.parse_qsl(parsed.query)),
                           'headers': {k.lower(): v for k, v in self.headers.items()},
                           'body': json.loads(raw) if raw else None}
                fake.requests.append(request)
                return request

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                request = self._record(method)
                if fake.not_found:
                    return self._send(404, {'error': 'Not Found', 'code': 5})
                if fake.token and request['headers'].get('authorization') != 'Bearer ' + fake.token:
                    return self._send(401, {'error': 'Unauthorized', 'code': 16})
                route = fake._route(method, request)
                if route is None:
                    return self._send(404, {'error': 'no route %s %s' % (method, request['path'])})
                self._send(*route)

            def do_GET(self):
                self._handle('GET')

            def do_POST(self):
                self._handle('POST')

        return Handler

    def _route(self, method, request):
        path, body = request['path'], request['body']
        if method == 'GET' and path == API + '/healthz':
            return 200, {'commit_sha': 'fake', 'tag_name': '2.4.0', 'multi_user': False}
        if method == 'GET' and path == API + '/experiments':
            wanted = None
            if 'filter' in request['query']:
                predicates = json.loads(request['query']['filter'])['predicates']
                wanted = predicates[0]['string_value' if 'string_value' in predicates[0]
                                    else 'stringValue']
            found = [{'experiment_id': i, 'display_name': n}
                     for n, i in self.experiments.items() if wanted in (None, n)]
            return 200, ({'experiments': found, 'total_size': len(found)} if found else {})
        if method == 'POST' and path == API + '/experiments':
            name = body['display_name']
            self.experiments[name] = 'exp-%d' % (len(self.experiments) + 1)
            return 200, {'experiment_id': self.experiments[name], 'display_name': name}
        if method == 'POST' and path == API + '/runs':
            run_id = self._new_run(body.get('experiment_id'), body.get('display_name'))
            return 200, dict(self.run_records[run_id], state='PENDING')
        if method == 'GET' and path.startswith(API + '/runs/'):
            run_id = path.rsplit('/', 1)[1]
            if run_id not in self.runs:
                return 404, {'error': 'run not found', 'code': 5}
            return 200, self._run_now(run_id)
        if method == 'GET' and path == API + '/runs':
            return 200, self._list_runs(request['query'])
        if path == API + '/recurringruns':
            return self._recurring_runs(method, request['query'], body)
        return None

    def _run_now(self, run_id):
        """The run with its next state (the states given at start-up, one per read)."""
        states = self.runs[run_id]
        state = states.pop(0) if len(states) > 1 else states[0]
        run = dict(self.run_records.get(run_id, {'run_id': run_id}), state=state)
        if state in ('SUCCEEDED', 'FAILED', 'CANCELED'):
            run['finished_at'] = run['created_at']
        if state == 'FAILED' and self.run_error:
            run['error'] = {'code': 2, 'message': self.run_error}
        return run

    def _list_runs(self, query):
        ids = [i for i, r in self.run_records.items()
               if query.get('experiment_id') in (None, r['experiment_id'])]
        ids.sort(key=lambda i: self.run_records[i]['created_at'],
                 reverse=query.get('sort_by', '').endswith(' desc'))
        ids = ids[:int(query.get('page_size') or len(ids) or 1)]
        found = [self._run_now(i) for i in ids]
        return {'runs': found, 'total_size': len(found)} if found else {}

    def _recurring_runs(self, method, query, body):
        if method == 'POST':
            if self.refuse_recurring_run:
                return 400, {'error': self.refuse_recurring_run, 'code': 3,
                             'message': self.refuse_recurring_run}
            recurring_run_id = 'rr-%d' % (len(self.recurring_runs) + 1)
            stored = dict(body, recurring_run_id=recurring_run_id, status='ENABLED',
                          created_at=self._now(), max_concurrency=str(body.get('max_concurrency')))
            self.recurring_runs[recurring_run_id] = stored
            return 200, stored
        found = [r for r in self.recurring_runs.values()
                 if query.get('experiment_id') in (None, r.get('experiment_id'))]
        # The v2beta1 proto names this field recurringRuns (camelCase), unlike `runs`.
        return 200, ({'recurringRuns': found, 'total_size': len(found)} if found else {})
