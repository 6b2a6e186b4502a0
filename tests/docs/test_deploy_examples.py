"""docs/deploy/docker-compose.yaml matches the layout RolloutController stages.

No Docker engine exists here, so the compose file is not run: every path it
mounts or passes is mapped through its volume mounts onto a serving root
staged by the real RolloutController (stable v1, canary v2), and must exist
there; the router's command must parse with the real CLI and point at the
tfserving service's REST port.
"""
import os
import re
import urllib.parse

import pytest
import yaml

from rollout import control, tfserving
from runners import cli
from tests.conftest import PROJECT_ROOT

COMPOSE = os.path.join(PROJECT_ROOT, 'docs', 'deploy', 'docker-compose.yaml')
MODEL = 'taxi'


def _fake_saved_model(path):
    os.makedirs(os.path.join(path, 'variables'))
    with open(os.path.join(path, 'saved_model.pb'), 'w') as f:
        f.write('fake graph')
    return path


def _host_path(value, serving_root):
    """A volume's host side, with ${VAR:-default} read as compose reads it."""
    def variable(match):
        name, default = match.group(1), match.group(2)
        return serving_root if name == 'SERVING_ROOT' else os.environ.get(name, default or '')
    return re.sub(r'\$\{(\w+)(?::-([^}]*))?\}', variable, value)


def _mounts(service, serving_root):
    """[(container path, host path)] of a service's bind mounts, longest first."""
    mounts = []
    for volume in service.get('volumes', []):
        host, container = _host_path(volume, serving_root).split(':')[:2]
        mounts.append((container.rstrip('/'), host))
    return sorted(mounts, key=lambda m: -len(m[0]))


def _on_host(path, mounts):
    for container, host in mounts:
        if path == container or path.startswith(container + '/'):
            return host + path[len(container):]
    raise AssertionError('%s is not under any volume mount %s' % (path, mounts))


def _flags(command):
    return dict(item[2:].split('=', 1) for item in command if item.startswith('--'))


@pytest.fixture
def compose():
    with open(COMPOSE, encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.fixture
def staged(compose, tmp_path):
    """A serving root staged as the compose file's header says (tf_serving_root)."""
    serving_root = str(tmp_path / 'serving')
    controller = control.RolloutController(
        serving_root, MODEL, tf_serving_root=compose['x-tfx-canary']['tf_serving_root'])
    for version in (1, 2):
        controller.stage(_fake_saved_model(str(tmp_path / 'exports' / str(version))),
                         canary_percent=10)
    return serving_root


def test_tf_serving_reads_the_staged_models_config_and_versions(compose, staged):
    service = compose['services']['tfserving']
    mounts = _mounts(service, staged)
    flags = _flags(service['command'])
    config_path = _on_host(flags['model_config_file'], mounts)
    assert os.path.samefile(config_path, tfserving.config_path(staged))
    entry = tfserving.find_entry(tfserving.read_config(config_path), MODEL)
    assert entry is not None, 'models.config has no entry for %s' % MODEL
    base = _on_host(entry.base_path, mounts)
    assert os.path.samefile(base, os.path.join(staged, MODEL))
    for version in entry.model_version_policy.specific.versions:
        assert os.path.isfile(os.path.join(base, str(version), 'saved_model.pb'))
    assert dict(entry.version_labels) == {'stable': 1, 'canary': 2}
    # Labels of versions still loading (a first canary) need this flag.
    assert flags['allow_version_labels_for_unavailable_models'] == 'true'


def test_the_router_parses_and_points_at_tf_servings_rest_port(compose, staged):
    router, tf = compose['services']['router'], compose['services']['tfserving']
    argv = router['command']
    assert router['entrypoint'] == ['tfx-canary']
    args = cli.build_parser().parse_args(argv)
    assert args.func.__name__ == 'cmd_serve'
    root = _on_host(args.serving_root, _mounts(router, staged))
    assert os.path.isfile(os.path.join(root, MODEL, 'rollout.json'))
    upstream = urllib.parse.urlsplit(args.upstream)
    assert upstream.hostname in compose['services']
    assert upstream.hostname == 'tfserving'
    assert str(upstream.port) == _flags(tf['command'])['rest_api_port']
    # The router writes serving-metrics.json beside rollout.json: a writable mount.
    assert not any(v.endswith(':ro') for v in router['volumes'])
