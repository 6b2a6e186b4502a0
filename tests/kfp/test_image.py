"""The container image: everything the compiled spec names imports from the
locked environment, and the Dockerfile installs exactly that (lock file +
`pip install --no-deps .`, Keras 2). No Docker engine here: this checks the
recipe and the environment it reproduces, not a built image."""
import ast
import importlib
import os
import re

import pytest

from runners import kfp_spec
from tests.conftest import PROJECT_ROOT

DOCKERFILE = os.path.join(PROJECT_ROOT, 'Dockerfile')


def _specs(spec, vertex_job):
    return [spec, vertex_job['pipelineSpec']]


def imports_named_in(spec):
    """(kind, dotted path) for every executor class, entry module and module
    path (run_fn, preprocessing_fn) a compiled spec makes a container import."""
    found = set()
    for c in kfp_spec.containers(spec).values():
        args = c['args']
        found.add(('class', args[args.index('--executor_class_path') + 1]))
        command = c.get('command', [])
        found.add(('module', command[command.index('-m') + 1]))
        hook = c.get('lifecycle', {}).get('preCacheCheck', {}).get('command', [])
        if '-m' in hook:
            found.add(('module', hook[hook.index('-m') + 1]))
    for task in spec['root']['dag']['tasks'].values():
        for name in ('run_fn', 'preprocessing_fn'):
            constant = task.get('inputs', {}).get('parameters', {}).get(name, {}).get(
                'runtimeValue', {}).get('constant')
            if constant:
                found.add(('function', constant))
    return sorted(found)


def test_every_executor_and_module_path_in_the_spec_imports(spec, vertex_job):
    names = set()
    for s in _specs(spec, vertex_job):
        names.update(imports_named_in(s))
    assert ('function', 'modules.model.run_fn') in names
    assert ('class', 'components.baseline.executor.Executor') in names
    for kind, dotted in sorted(names):
        if kind == 'module':
            importlib.import_module(dotted)
        else:
            module, _, attr = dotted.rpartition('.')
            assert callable(getattr(importlib.import_module(module), attr)), dotted


def _setup_packages():
    """The `include` patterns of setup.py's find_packages call."""
    tree = ast.parse(open(os.path.join(PROJECT_ROOT, 'setup.py')).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'include':
            return [elt.value for elt in node.value.elts]
    raise AssertionError('setup.py has no find_packages(include=...)')


def test_pip_install_of_the_project_ships_every_project_module(spec, vertex_job):
    from setuptools import find_packages
    shipped = set(find_packages(where=PROJECT_ROOT, include=_setup_packages()))
    for s in _specs(spec, vertex_job):
        for kind, dotted in imports_named_in(s):
            module = dotted if kind == 'module' else dotted.rpartition('.')[0]
            if os.path.isdir(os.path.join(PROJECT_ROOT, module.split('.')[0])):
                assert module.rpartition('.')[0] in shipped, (
                    '%s is not installed by `pip install .` (setup.py packages)' % dotted)


@pytest.fixture(scope='module')
def dockerfile():
    with open(DOCKERFILE) as f:
        return f.read()


def test_dockerfile_installs_the_locked_stack_then_the_project(dockerfile):
    assert re.search(r'^FROM python:3\.11-slim$', dockerfile, re.M)
    lock = dockerfile.index('pip install --ignore-requires-python -r /tmp/requirements/lock.txt')
    project = dockerfile.index('--no-deps')
    assert lock < project
    assert re.search(r'TF_USE_LEGACY_KERAS=1', dockerfile)
    for package in _setup_packages():
        if not package.endswith('.*'):
            assert 'COPY %s ' % package in dockerfile, package


def test_dockerfile_bakes_in_the_runtime_parameter_defaults(dockerfile):
    from pipeline import kubeflow_configs
    assert 'COPY data/taxi %s' % kubeflow_configs.IMAGE_DATA_ROOT in dockerfile
    assert os.path.isfile(os.path.join(PROJECT_ROOT, 'data', 'taxi', 'schema.pbtxt'))


def test_lock_file_pins_what_the_compiler_and_executors_need():
    with open(os.path.join(PROJECT_ROOT, 'requirements', 'lock.txt')) as f:
        pins = dict(line.strip().split('==', 1) for line in f
                    if '==' in line and not line.startswith('#'))
    import kfp
    import tfx
    assert pins['tfx'] == tfx.__version__ and pins['kfp'] == kfp.__version__
