"""`rollout watch` against a real `tfx-canary serve`: a worse canary is rolled
back by itself, on live accuracy from labels sent to :feedback, while clients
keep being answered (real processes and sockets, tiny real models).

v1 (stable) predicts p = sigmoid(fare - len(company)); the labels are made to
agree with it, so it is right on every row. v2 (the canary) predicts
sigmoid(-fare - len(company)) < 0.5 everywhere: right only on the negatives,
about half the rows. Both models derive the label by their own transform
signature (tips > 2, tests/serving/test_live_quality.py), as serve does.
"""
import json
import os
import random
import socket
import subprocess
import threading
import time

import httpx
import pytest

from rollout import control
from tests.conftest import tfx_canary_command
from tests.serving.conftest import predict_body, wait_for
from tests.serving.test_live_quality import save_model

MODEL = 'taxi'
COMPANY = 'Cab 1'         # length 5: stable's p >= 0.5 exactly when fare >= 5
POLICY = {
    'steps': [50, 100], 'min_requests': {'canary': 30, 'stable': 30},
    'min_window_seconds': 0,
    # Live accuracy decides: the prediction-shift checks are opened wide.
    'prediction_shift': {'max_mean_shift': 1.0, 'max_js_divergence': 1.0},
    'live_quality': {'min_labeled': 50, 'accuracy_margin': 0.05},
    'watch': {'failure_limit': 2},
}


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def serving_root(tmp_path):
    root = str(tmp_path / 'serving')
    controller = control.RolloutController(root, MODEL)
    for version, weight in ((1, 1.0), (2, -1.0)):
        controller.stage(save_model(str(tmp_path / 'exports' / str(version)), weight),
                         canary_percent=50)
    return root


@pytest.fixture
def server(serving_root, tmp_path):
    port = _free_port()
    log = open(tmp_path / 'serve.log', 'w+')
    process = subprocess.Popen(
        tfx_canary_command() + [
            'serve', '--serving-root', serving_root, '--port', str(port),
            '--poll-seconds', '0.2', '--capture-rate', '1',
            '--capture-dir', str(tmp_path / 'capture')],
        stdout=log, stderr=subprocess.STDOUT)
    url = 'http://127.0.0.1:%d' % port

    def ready():
        assert process.poll() is None, open(log.name).read()
        try:
            return httpx.get(url + '/v1/models/' + MODEL, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=120, what='tfx-canary serve to start')
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


class Clients:
    """Client threads predicting and labeling until stopped; every answer recorded."""

    def __init__(self, url, threads=2):
        self.url = url
        self.statuses, self.versions = [], []
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed,), daemon=True)
                         for seed in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, seed):
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                fares = [rng.uniform(0.0, 10.0) for _ in range(4)]
                response = client.post('/v1/models/%s:predict' % MODEL, json=predict_body(
                    [{'fare': fare, 'company': COMPANY} for fare in fares]),
                    headers={'X-Request-Key': 'user-%d' % rng.randrange(10 ** 6)})
                self.statuses.append(response.status_code)
                if response.status_code != 200:
                    continue
                self.versions.append(int(response.headers['x-model-version']))
                # The truth stable predicts: a positive (tips > 2) when fare >= 5.
                labels = [{'request_id': response.headers['x-request-id'], 'row': row,
                           'tips': 3.0 if fare >= 5 else 0.0} for row, fare in enumerate(fares)]
                answer = client.post('/v1/models/%s:feedback' % MODEL, json={'labels': labels})
                self.statuses.append(answer.status_code)


@pytest.mark.e2e
def test_watch_rolls_a_worse_canary_back_by_itself_with_no_failed_request(
        serving_root, server, tmp_path):
    policy = tmp_path / 'policy.json'
    policy.write_text(json.dumps(POLICY))
    with Clients(server) as clients:
        watch = subprocess.run(
            tfx_canary_command() + ['rollout', 'watch', '--serving-root', serving_root,
                                    '--metrics', server, '--policy', str(policy),
                                    '--interval', '0.5', '--inconclusive-limit', '120'],
            capture_output=True, text=True, timeout=180)
        # Keep the clients going until serve has picked up the rollback.
        wait_for(lambda: clients.versions[-20:] == [1] * 20, timeout=30,
                 what='serve to route everything to stable v1')
    out = watch.stdout
    assert watch.returncode == 1, out + watch.stderr
    assert 'ROLLBACK v2: canary live accuracy' in out
    assert 'failed analysis 1 of 2 in a row' in out
    assert 'watch ended: rolled back' in out
    state = control.RolloutController(serving_root, MODEL).load()
    assert (state.stable_version, state.canary_version) == (1, None)
    event = state.last_event
    assert event['event'] == 'rolled_back' and event['actor'].startswith('rollout watch')
    assert 'live accuracy canary' in event['reason']
    assert clients.statuses and set(clients.statuses) == {200}   # no failed request
    assert 2 in clients.versions                                  # the canary did serve
    assert os.path.isdir(tmp_path / 'capture')
