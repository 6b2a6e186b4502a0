"""Runs a compiled package through kfp.local's orchestrator, each container's
command as a process of this environment.

kfp.local (kfp 2.13) runs a PipelineSpec's DAG: task order, executor input,
placeholders, importers, output collection. Its two runners do not fit: the
DockerRunner needs a Docker engine, the SubprocessRunner accepts only KFP's
lightweight Python components. So for the duration of one run this module
swaps kfp.local's subprocess task handler for `_ProcessTaskHandler` (run the
container's command + args with this environment's Python, log to a file) and
wraps its executor-input construction with the adaptations in adapt.py. Both
are restored afterwards; the package is never changed.

Why `pipeline_orchestrator.run_local_pipeline` and not
`load_component_from_file(package)(**args)`: the latter rebuilds the spec
through the SDK's ComponentSpec, which is not guaranteed to keep TFX's IR
(instanceSchema types, lifecycle hooks) as compiled; the orchestrator is
where that call ends up, given the package's own PipelineSpec.
"""
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Dict, Optional, Tuple

from runners.kfp_local import adapt, prestart
from runners.kfp_local.package import (VERTEX, KfpLocalError, LOCAL_PIPELINE_ROOT,
                                       PROJECT_ROOT, load_package, local_mounts,
                                       runtime_arguments)

TASK_LOG = 'task.log'                 # In each task's folder: its processes' stdout + stderr.
ORCHESTRATOR_LOG = 'kfp-local.log'    # In the run's folder: kfp.local's own log lines.
EXECUTOR_OUTPUT = 'executor_output.json'
# What the Dockerfile's ENV sets for every step (tests/kfp/test_dockerfile.py
# checks the two agree); PYTHONPATH stands in for `pip install .` in the image.
IMAGE_ENV = {'PYTHONUNBUFFERED': '1', 'TF_USE_LEGACY_KERAS': '1'}
_PYTHON_RE = re.compile(r'^python(3(\.\d+)?)?$')
# kfp.local names task folders by cutting "comp-" off component names, which
# the KFP SDK's compiler writes and TFX's does not (adaptation in _task_folder).
_COMPONENT_PREFIX = 'comp-'
_ERROR_LINE_RE = re.compile(r'^(\w+\.)*\w*(Error|Exception|Exit)\b.*')


class KfpLocalTaskFailed(KfpLocalError):
    """A task of the local run exited non-zero."""


# TFX's entrypoint writes a custom property whose name is also a property of
# the type as "custom:<name>" (tfx.types.artifact.CUSTOM_PROPERTIES_PREFIX;
# importing that module imports TensorFlow). ExampleGen's span is one.
TFX_CUSTOM_PREFIX = 'custom:'


@dataclasses.dataclass(frozen=True)
class ArtifactOut:
    """One output artifact as the task's executor output reported it."""
    key: str
    type_title: str     # e.g. tfx.ModelBlessing (from the IR's instanceSchema)
    uri: str
    metadata: Dict[str, object]

    def get(self, name, default=None):
        """A property or custom property by its TFX name."""
        return self.metadata.get(name, self.metadata.get(TFX_CUSTOM_PREFIX + name, default))


@dataclasses.dataclass(frozen=True)
class TaskRun:
    name: str
    succeeded: bool
    seconds: float
    log_path: str
    exit_code: int = 0
    outputs: Tuple[ArtifactOut, ...] = ()

    def output(self, key) -> Optional[ArtifactOut]:
        return next((o for o in self.outputs if o.key == key), None)


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """What one `kfp run-local` did."""
    package: str
    pipeline_name: str
    run_dir: Optional[str]
    tasks: Tuple[TaskRun, ...]
    seconds: float
    arguments: Dict[str, object]

    @property
    def succeeded(self):
        return bool(self.tasks) and all(t.succeeded for t in self.tasks)

    def task(self, name) -> Optional[TaskRun]:
        return next((t for t in self.tasks if t.name == name), None)

    def outputs_of_type(self, type_title):
        return [o for t in self.tasks for o in t.outputs if o.type_title == type_title]


@dataclasses.dataclass
class _Current:
    """The task kfp.local is running now (its DAG runs one task at a time)."""
    name: str
    task_root: str
    executor_label: str
    component_spec: object
    executor_input: object


class _Session:
    """One local run: the patched kfp.local hooks and what they recorded."""

    def __init__(self, package, mounts, pipeline_root, write):
        self.package = package
        self.mounts = mounts
        self.pipeline_root = pipeline_root
        self.write = write
        self.current = None
        self.tasks = []
        self.run_dir = None
        self.total = len(package.container_tasks())
        self.prestarted = None   # A prestart.Prestarted, unless --cold-start.

    # ---- kfp.local hooks

    def wrap_construct(self, original):
        def construct_executor_input(component_spec, arguments, task_root, block_input_artifact):
            executor_input = original(component_spec=component_spec, arguments=arguments,
                                      task_root=task_root, block_input_artifact=block_input_artifact)
            adapt.restore_declared_types(executor_input, component_spec)
            adapt.translate_mounted_paths(executor_input, self.mounts, component_spec.executor_label)
            self.run_dir = os.path.dirname(task_root)
            self.current = _Current(os.path.basename(task_root), task_root,
                                    component_spec.executor_label, component_spec, executor_input)
            return executor_input
        return construct_executor_input

    def handler_class(self):
        from kfp.local import status, task_handler_interface
        session = self

        class _ProcessTaskHandler(task_handler_interface.ITaskHandler):
            """Runs the container's command + args as a local process."""

            def __init__(self, image, full_command, pipeline_root, runner):
                super().__init__(image, full_command, pipeline_root, runner)
                self.full_command = list(full_command)

            def run(self):
                ok = session.run_task(self.full_command)
                return status.Status.SUCCESS if ok else status.Status.FAILURE

        return _ProcessTaskHandler

    # ---- running one task

    def run_task(self, full_command):
        task = self.current
        log_path = os.path.join(task.task_root, TASK_LOG)
        os.makedirs(task.task_root, exist_ok=True)
        started = time.monotonic()
        code = 0
        with open(log_path, 'w') as log:
            hook = self._hook_command(task)
            if hook:
                code = self._call(task, hook, log)
                if code == 0:
                    full_command = self._after_hook(task)
            if code == 0:
                code = self._call(task, full_command, log)
        seconds = time.monotonic() - started
        outputs = _read_outputs(task) if code == 0 else ()
        self.tasks.append(TaskRun(task.name, code == 0, seconds, log_path, code, outputs))
        if code == 0:
            self.write('  [%d/%d] %-32s %.1f s' % (len(self.tasks), self.total, task.name, seconds))
        else:
            self.write('  [%d/%d] %-32s FAILED after %.1f s (exit %d); log: %s'
                       % (len(self.tasks), self.total, task.name, seconds, code, log_path))
        return code == 0

    def _call(self, task, command, log):
        log.write('$ %s\n' % ' '.join(command)[:2000])
        log.flush()
        argv, env = self._local_argv(task, command), self._environment()
        if self.prestarted is not None and self.prestarted.accepts(argv[1:], env):
            code = self.prestarted.call(argv[1:], task.task_root, env, log.name)
            if code is not None:
                return code
            self.write('  (%s; running tasks in fresh interpreters)' % self.prestarted.note)
            self.prestarted = None
        return subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT,
                               cwd=task.task_root, env=env)

    def _resolve(self, task, command):
        """`command` with its placeholders resolved as kfp.local resolves a
        task's command, from the task's (current) executor input."""
        from kfp.local import executor_input_utils, placeholder_utils
        return placeholder_utils.replace_placeholders(
            full_command=command,
            executor_input_dict=executor_input_utils.executor_input_to_dict(
                task.executor_input, task.component_spec),
            pipeline_resource_name=os.path.basename(os.path.dirname(task.task_root)),
            task_resource_name=task.name, pipeline_root=self.pipeline_root,
            unique_pipeline_id=placeholder_utils.make_random_id())

    def _hook_command(self, task):
        """The preCacheCheck hook where the package's backend runs one (Vertex
        only; adaptation 3), resolved; else None."""
        if self.package.target != VERTEX:
            return None
        hook = adapt.pre_cache_check_command(self.package.executor(task.executor_label))
        return self._resolve(task, hook) if hook else None

    def _after_hook(self, task):
        """Applies the hook's ExecutorOutput to the task, as Vertex does, and
        returns the main command resolved from the updated executor input."""
        from google.protobuf import json_format
        from kfp.pipeline_spec import pipeline_spec_pb2
        path = task.executor_input.outputs.output_file
        if os.path.isfile(path):
            with open(path) as f:
                adapt.apply_hook_output(task.executor_input, json_format.Parse(
                    f.read(), pipeline_spec_pb2.ExecutorOutput(), ignore_unknown_fields=True))
        container = self.package.executor(task.executor_label)['container']
        return self._resolve(task, list(container.get('command', [])) +
                             list(container.get('args', [])))

    @staticmethod
    def _local_argv(task, command):
        if not command or not _PYTHON_RE.match(os.path.basename(command[0])):
            raise KfpLocalError(
                'task %s runs `%s` in its container: run-local runs only Python entry points, '
                'with this environment\'s interpreter (%s)'
                % (task.name, ' '.join(command[:3]), sys.executable))
        return [sys.executable] + list(command[1:])

    @staticmethod
    def _environment():
        env = dict(os.environ)
        env.update(IMAGE_ENV)
        env['PYTHONPATH'] = os.pathsep.join(p for p in (PROJECT_ROOT, env.get('PYTHONPATH')) if p)
        return env


def _read_outputs(task):
    """The task's output artifacts from its executor_output.json."""
    import yaml
    path = task.executor_input.outputs.output_file
    if not os.path.isfile(path):
        return ()
    with open(path) as f:
        written = json.load(f)
    declared = task.component_spec.output_definitions.artifacts
    outputs = []
    for key, artifact_list in sorted(written.get('artifacts', {}).items()):
        schema = declared[key].artifact_type.instance_schema if key in declared else ''
        title = (yaml.safe_load(schema) or {}).get('title', '') if schema else ''
        for artifact in artifact_list.get('artifacts', []):
            outputs.append(ArtifactOut(key, title, artifact.get('uri', ''),
                                       dict(artifact.get('metadata', {}))))
    return tuple(outputs)


def _task_folder(component_name):
    """kfp.local's task folder name, without cutting the first five letters off
    names that do not start with "comp-" (TFX's: CsvExampleGen -> ampleGen)."""
    if component_name.startswith(_COMPONENT_PREFIX):
        return component_name[len(_COMPONENT_PREFIX):]
    return component_name


@contextlib.contextmanager
def _patched_kfp_local(session):
    """kfp.local with session's task handler and executor-input adaptations;
    every patched attribute and kfp.local's global config are restored."""
    from kfp import local
    from kfp.local import config, executor_input_utils, subprocess_task_handler

    patches = [
        (subprocess_task_handler, 'SubprocessTaskHandler', session.handler_class()),
        (executor_input_utils, 'construct_executor_input',
         session.wrap_construct(executor_input_utils.construct_executor_input)),
        (executor_input_utils, 'get_local_task_resource_name', _task_folder),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    saved_instance = config.LocalExecutionConfig.instance
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root=session.pipeline_root, raise_on_error=False)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        config.LocalExecutionConfig.instance = saved_instance


def _last_error_line(log_path):
    try:
        with open(log_path, errors='replace') as f:
            lines = [line.strip() for line in f]
    except OSError:
        return None
    errors = [line for line in lines if _ERROR_LINE_RE.match(line)]
    return errors[-1][:300] if errors else None


def run_local(package_path, workspace, serving_root=None, params=None, write=None,
              cold_start=False) -> LocalRun:
    """Runs the package; returns the LocalRun, or raises KfpLocalTaskFailed
    naming the failed task and its log (KfpLocalError for bad input).

    Tasks are forked from an interpreter that imported their modules once
    (prestart.py); `cold_start` runs each in a fresh interpreter instead, as
    its container would.

    `write(line)` gets the progress lines (default: this stdout; kfp.local's
    own log lines go to the run's kfp-local.log instead).
    """
    if write is None:
        stream = sys.stdout   # Bound now: kfp.local's stdout is redirected below.
        write = lambda line: print(line, file=stream, flush=True)  # noqa: E731
    package = load_package(package_path)
    workspace = os.path.abspath(workspace)
    serving_root = os.path.abspath(serving_root or os.path.join(workspace, 'serving'))
    arguments = runtime_arguments(package, params or {})
    mounts = local_mounts(package, workspace, serving_root)
    pipeline_root = os.path.join(workspace, LOCAL_PIPELINE_ROOT)
    os.makedirs(pipeline_root, exist_ok=True)

    write('Running %s (%s package %s) under kfp.local -> workspace %s'
          % (package.pipeline_name, package.target, package.path, workspace))
    for note in arguments.notes:
        write('  runtime parameter %s' % note)
    for mount in mounts:
        write('  %s (as the steps see it) is %s here' % (mount.path, mount.local))

    session = _Session(package, mounts, pipeline_root, write)
    from kfp.local import pipeline_orchestrator
    if cold_start:
        write('  each task in a fresh interpreter (--cold-start)')
    else:
        # Started now: it imports while kfp.local prepares the first task.
        session.prestarted = prestart.Prestarted(*package.python_entry_points(),
                                                 env=_Session._environment(), cwd=PROJECT_ROOT)
        write('  tasks are forked from an interpreter that imported TFX once '
              '(--cold-start: a fresh one each)')
    started = time.monotonic()
    # kfp.local's own log lines; in the run's folder once kfp.local has named it.
    orchestrator_log = os.path.join(pipeline_root, '.%s.%d' % (ORCHESTRATOR_LOG, os.getpid()))
    try:
        with open(orchestrator_log, 'w') as log, contextlib.redirect_stdout(log), \
                _patched_kfp_local(session):
            pipeline_orchestrator.run_local_pipeline(package.pipeline_spec_proto(),
                                                     arguments.values)
    finally:
        if session.prestarted is not None:
            session.prestarted.close()
        if session.run_dir:
            os.replace(orchestrator_log, os.path.join(session.run_dir, ORCHESTRATOR_LOG))
    run = LocalRun(package.path, package.pipeline_name, session.run_dir, tuple(session.tasks),
                   time.monotonic() - started, dict(arguments.values))
    failed = [t for t in run.tasks if not t.succeeded]
    if failed:
        task = failed[0]
        detail = _last_error_line(task.log_path)
        raise KfpLocalTaskFailed('task %s failed (exit %d)%s; its log: %s' % (
            task.name, task.exit_code, ': %s' % detail if detail else '', task.log_path))
    if len(run.tasks) != session.total:
        raise KfpLocalError('kfp.local ran %d of %d container tasks of %s; see %s' % (
            len(run.tasks), session.total, package.pipeline_name,
            os.path.join(session.run_dir or pipeline_root, ORCHESTRATOR_LOG)))
    return run
