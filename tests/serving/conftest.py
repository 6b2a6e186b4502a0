"""Serving test helpers: a real server on loopback over a private workspace copy."""
import contextlib
import os
import shutil
import threading
import time

import pytest

from serving import server as server_lib
from tests.conftest import DATA_ROOT

MODEL = 'taxi'


@pytest.fixture(scope='session')
def instances(schema):
    """predict_raw instances from span 2 (rows with every model feature present)."""
    from modules import features
    from serving import client
    return client.instances_from_csv(os.path.join(DATA_ROOT, 'span-2', 'data.csv'), schema,
                                     features.RAW_FEATURE_KEYS)


def ensure_canary(workspace):
    """Leaves `workspace` serving stable v1 and canary v2 at 10%, as `make run` does.

    The span-2 retrain is staged only if the Evaluator blesses it, and whether
    it does can flip with a regression inside the AUC noise. When it was not
    staged, its Trainer output is staged here exactly as CanaryPusher would
    (validated, atomically), so the serving tests always compare two real
    trained models.
    """
    import functools

    from rollout import control, staging
    controller = control.RolloutController(str(workspace / 'serving'), MODEL)
    if controller.load().canary_version is None:
        models = workspace / 'pipeline' / 'Trainer' / 'model'
        newest = max((p for p in models.iterdir() if p.name.isdigit()),
                     key=lambda p: int(p.name))
        controller.stage(str(newest / 'Format-Serving'), canary_percent=10,
                         validate=functools.partial(
                             staging.validate_saved_model,
                             required_signatures=('serving_default', 'predict_raw')),
                         reason='serving tests: the span-2 retrain, not blessed this run')
    state = controller.load()
    assert (state.stable_version, state.canary_version, state.canary_traffic_percent) == (
        1, 2, 10), 'the serving tests expect stable v1 and canary v2 at 10%'
    return workspace


@pytest.fixture(scope='module')
def module_workspace(pipeline_workspace, tmp_path_factory):
    """A copy of the pipeline workspace shared by one test module (like copy_workspace)."""
    dst = tmp_path_factory.mktemp('serving') / 'workspace'
    shutil.copytree(pipeline_workspace['path'], dst, symlinks=True)
    return ensure_canary(dst)


@pytest.fixture
def served_workspace(copy_workspace):
    """copy_workspace (a private copy, safe to change) with stable v1 and canary v2."""
    return ensure_canary(copy_workspace)


class BackgroundServer:
    """Runs a ModelServer on a thread of the test process; `url` once started."""

    def __init__(self, server, host='127.0.0.1', port=0):
        self.server = server
        self.sock = server_lib.bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = 'http://%s:%d' % (self.host, self.port)
        self._uvicorn = server_lib.uvicorn_server(server_lib.create_app(server))
        self._thread = threading.Thread(target=self._uvicorn.run,
                                        kwargs={'sockets': [self.sock]},
                                        name='uvicorn', daemon=True)

    def start(self, timeout=120):
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise RuntimeError('the server failed to start (see the log)')
            if time.monotonic() > deadline:
                raise RuntimeError('the server did not start within %ss' % timeout)
            time.sleep(0.05)
        return self

    def stop(self, timeout=60):
        self._uvicorn.should_exit = True
        self._thread.join(timeout)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def running(serving_root, **config):
    """A ModelServer on 127.0.0.1:<free port> in this process; yields BackgroundServer."""
    from serving.server import ModelServer, ServerConfig
    config.setdefault('poll_seconds', 0.1)
    config.setdefault('snapshot_seconds', 0.5)
    server = ModelServer(ServerConfig(str(serving_root), **config))
    background = BackgroundServer(server, '127.0.0.1', 0).start()
    try:
        yield background
    finally:
        background.stop()


def wait_for(predicate, timeout=30.0, what='condition'):
    """Polls `predicate` until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))
        time.sleep(0.05)


def predict_body(instances, signature='predict_raw', **extra):
    return dict({'signature_name': signature, 'instances': instances}, **extra)
