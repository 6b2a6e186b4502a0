"""`tfx-canary serve` as a real command: its flag errors, and a start-serve-capture-stop cycle.

The flag errors need no pipeline (an empty temp dir as the serving root); the
start test serves the pipeline's staged models on a free loopback port.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from serving import capture
from tests.conftest import PROJECT_ROOT, SCHEMA_PATH, one_error_line
from tests.serving.conftest import MODEL, predict_body


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get('PYTHONPATH')]))
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    return env


def _serve_argv(*args):
    return [sys.executable, '-m', 'runners.cli', 'serve', *args]


def _run_serve(cwd, *args):
    done = subprocess.run(_serve_argv(*args), cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize('args, fragment', [
    (['--capture-rate', '1.5'], '--capture-rate must be between 0 and 1, got 1.5'),
    (['--capture-rate', '-0.1'], '--capture-rate must be between 0 and 1, got -0.1'),
    (['--capture-rate', 'nan'], '--capture-rate must be between 0 and 1'),
    (['--predict-threads', '0'], '--predict-threads must be at least 1, got 0'),
    (['--max-body-bytes', '0'], '--max-body-bytes must be at least 1, got 0'),
    (['--max-body-bytes', '-5'], '--max-body-bytes must be at least 1, got -5'),
    (['--grpc-port', '-1'], '--grpc-port must be 0 (a free port) or a port other than --port'),
    (['--port', '8600', '--grpc-port', '8600'], 'other than --port (8600), e.g. 8500, got 8600'),
])
def test_bad_flag_values_are_one_error_line(tmp_path, args, fragment):
    # An existing (empty) serving root: the flag must be refused before the
    # server looks for models.
    (tmp_path / 'serving').mkdir()
    code, out, err = _run_serve(tmp_path, '--serving-root', str(tmp_path / 'serving'), *args)
    line = one_error_line(code, out, err)
    assert fragment in line


def test_a_grpc_port_in_use_is_one_error_line(tmp_path):
    (tmp_path / 'serving').mkdir()
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = _run_serve(tmp_path, '--serving-root', str(tmp_path / 'serving'),
                                    '--grpc-port', str(port))
    assert 'cannot listen on 127.0.0.1:%d (--grpc-port)' % port in one_error_line(code, out, err)


def test_a_missing_serving_root_is_one_error_line(tmp_path):
    code, out, err = _run_serve(tmp_path, '--serving-root', str(tmp_path / 'nope'))
    assert 'serving root %s does not exist' % (tmp_path / 'nope') in one_error_line(
        code, out, err)
    # The default, ./workspace/serving, is relative to where the command runs.
    code, out, err = _run_serve(tmp_path)
    assert 'pass --serving-root' in one_error_line(code, out, err)


def test_an_invalid_mode_is_argparse_usage_error(tmp_path):
    code, out, err = _run_serve(tmp_path, '--mode', 'bogus')
    assert code == 2 and out == ''
    assert "argument --mode: invalid choice: 'bogus'" in err


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_for_status(proc, url, timeout=240):
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as c:
        while True:
            if proc.poll() is not None:
                raise AssertionError('serve exited with %s before answering:\n%s'
                                     % (proc.returncode, proc.stderr.read()))
            try:
                response = c.get(url + '/v1/models/' + MODEL)
                if response.status_code == 200:
                    return response.json()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError('serve did not answer within %ss' % timeout)
            time.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.parametrize('signame', ['SIGINT', 'SIGTERM'])
def test_serve_starts_captures_and_stops_cleanly(served_workspace, instances, tmp_path,
                                                 signame):
    capture_dir = tmp_path / 'capture'
    port = _free_port()
    proc = subprocess.Popen(
        _serve_argv('--serving-root', str(served_workspace / 'serving'), '--port', str(port),
                    '--capture-rate', '0.5', '--capture-dir', str(capture_dir),
                    '--max-body-bytes', '4096'),
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = 'http://127.0.0.1:%d' % port
    try:
        status = _wait_for_status(proc, url)
        assert {s['version'] for s in status['model_version_status']} == {'1', '2'}
        requests = 40
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(requests):
                response = c.post('/v1/models/%s:predict' % MODEL,
                                  json=predict_body([instances[i]]))
                assert response.status_code == 200, response.text
            # The flag reached the server: one byte over --max-body-bytes is refused.
            too_big = c.post('/v1/models/%s:predict' % MODEL, content=b' ' * 4097)
            assert too_big.status_code == 413
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (proc.returncode, err)
    assert 'Traceback' not in err, err
    assert 'capturing 50%% of requests into %s' % (capture_dir / 'span-1') in err
    # --capture-span not given and nothing captured yet: span 1, with the schema's header.
    assert os.listdir(capture_dir) == ['span-1']
    parts = capture.part_files(str(capture_dir), 1)
    assert parts, os.listdir(capture_dir / 'span-1')
    header = capture.header_from_schema(SCHEMA_PATH)
    rows = 0
    for part in parts:
        with open(part) as f:
            lines = f.read().splitlines()
        assert lines[0] == ','.join(header)
        rows += len(lines) - 1
    # Binomial(40, 0.5): 0 or 40 has probability 2 * 2**-40.
    assert 0 < rows < requests
