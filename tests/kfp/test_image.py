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


# ------------------------------------------- the Dockerfile against the package

def dockerfile_instructions(text):
    """[(INSTRUCTION, arguments)] with continuations joined and comment lines
    dropped (Docker drops them before joining, even inside a continuation)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith('#')]
    joined, current = [], ''
    for line in lines:
        if line.rstrip().endswith('\\'):
            current += line.rstrip()[:-1] + ' '
            continue
        current += line
        if current.strip():
            instruction, _, rest = current.strip().partition(' ')
            joined.append((instruction.upper(), rest.strip()))
        current = ''
    return joined


def _args(dockerfile):
    return {k: v for k, v in (a.split('=', 1) for i, a in dockerfile_instructions(dockerfile)
                              if i == 'ARG' and '=' in a)}


def test_every_path_the_dockerfile_copies_exists(dockerfile):
    copies = [a.split() for i, a in dockerfile_instructions(dockerfile) if i == 'COPY']
    local = [c for c in copies if not c[0].startswith('--from=')]
    assert len(local) >= 10
    for *sources, _ in local:
        for source in sources:
            assert os.path.exists(os.path.join(PROJECT_ROOT, source)), (
                'Dockerfile copies %s, which is not in the repository' % source)


def test_the_image_runs_what_the_spec_calls(dockerfile, spec, vertex_job):
    """Every step's command is `python -m MODULE`: the base image's `python`,
    the interpreter the locked stack is installed into, in the image's project
    folder; the ENTRYPOINT (Beam's harness) is never what a step runs."""
    from pipeline import kubeflow_configs
    instructions = dockerfile_instructions(dockerfile)
    base = [a for i, a in instructions if i == 'FROM'][-1]
    assert re.fullmatch(r'python:3\.11(-slim)?', base), base   # Ships `python`.
    assert ('WORKDIR', kubeflow_configs.IMAGE_PROJECT_DIR) in instructions
    for s in _specs(spec, vertex_job):
        for label, container in kfp_spec.containers(s).items():
            command = container['command']
            assert command[:2] == ['python', '-m'], (label, command)  # Overrides ENTRYPOINT.
            importlib.import_module(command[2])


def test_the_beam_harness_matches_the_locked_beam_and_python(dockerfile):
    """Dataflow/Flink/Spark workers run the image through Beam's boot binary:
    it must come from the Beam SDK release and Python the image installs."""
    with open(os.path.join(PROJECT_ROOT, 'requirements', 'lock.txt')) as f:
        beam = re.search(r'^apache-beam==(\S+)$', f.read(), re.M).group(1)
    sdk_image = _args(dockerfile)['BEAM_SDK_IMAGE']
    assert sdk_image == 'apache/beam_python3.11_sdk:%s' % beam
    instructions = dockerfile_instructions(dockerfile)
    entrypoint = [a for i, a in instructions if i == 'ENTRYPOINT'][-1]
    boot = re.fullmatch(r'\["(/opt/apache/beam/boot)"\]', entrypoint).group(1)
    assert any(i == 'COPY' and a.startswith('--from=beam ') and boot.startswith(a.split()[-1])
               for i, a in instructions)


def test_run_local_sets_the_environment_the_image_sets(dockerfile):
    """kfp run-local stands in for the image: the same ENV for every step."""
    from runners.kfp_local.runner import IMAGE_ENV
    env = {}
    for instruction, args in dockerfile_instructions(dockerfile):
        if instruction == 'ENV':
            env.update(pair.split('=', 1) for pair in args.split())
    assert {k: env.get(k) for k in IMAGE_ENV} == IMAGE_ENV
