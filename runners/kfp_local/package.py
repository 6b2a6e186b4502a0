"""A compiled package as a local run needs it: its PipelineSpec, the runtime
arguments to pass, and where the folders its steps would mount are here.

Reads both targets: the KFP YAML package (PipelineSpec + optional Kubernetes
platform spec) and the Vertex PipelineJob JSON (pipelineSpec + runtimeConfig).
Nothing here changes the package; everything a local run decides differently
from a cluster is returned as data (arguments, mounts) and printed.
"""
import dataclasses
import json
import os
from typing import Dict, FrozenSet, Optional, Tuple

from pipeline import kubeflow_configs
from common.errors import TfxCanaryError
from runners import kfp_spec

# The checkout whose code and data the local processes use: the image's
# /pipeline (IMAGE_PROJECT_DIR) holds a copy of the same files (Dockerfile).
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The exec property BaselineModel and CanaryPusher both read the staging area from.
SERVING_ROOT_PARAMETER = 'serving_root'
# Under --workspace: kfp.local's pipeline root (task outputs, logs), PVCs that
# are not the serving root, and Vertex's Cloud Storage FUSE mount (/gcs/).
LOCAL_PIPELINE_ROOT = 'kfp-local'
VOLUMES_DIR = 'volumes'
GCS_DIR = 'gcs'
GCS_FUSE_ROOT = '/gcs'
KFP, VERTEX = 'kfp', 'vertex'
RUNNABLE_EXECUTORS = ('container', 'importer')   # What kfp.local's DAG runner handles.
EXECUTOR_CLASS_FLAG = '--executor_class_path'    # TFX's KFP v2 entrypoint's argument.


class KfpLocalError(TfxCanaryError):
    """The package cannot be run locally as given."""


@dataclasses.dataclass(frozen=True)
class Mount:
    """A folder a step sees at `path` (a PVC mount, Vertex's /gcs/ FUSE) that is
    `local` here. `executors`: the executor labels that mount it (None: all)."""
    path: str
    local: str
    executors: Optional[FrozenSet[str]] = None

    def applies_to(self, executor_label):
        return self.executors is None or executor_label in self.executors

    def translate(self, value):
        """`value` with the mount path replaced by the local folder, or None if
        `value` is not on this mount."""
        root = self.path.rstrip('/')
        if value == root or value.startswith(root + '/'):
            return self.local.rstrip('/') + value[len(root):]
        return None


@dataclasses.dataclass(frozen=True)
class LocalPackage:
    path: str
    target: str                         # KFP or VERTEX
    spec: dict                          # PipelineSpec (JSON dict form)
    platform: Optional[dict] = None     # KFP's Kubernetes platform spec document
    job_parameters: Tuple[Tuple[str, object], ...] = ()   # Vertex runtimeConfig values

    @property
    def pipeline_name(self):
        return self.spec['pipelineInfo']['name']

    @property
    def tasks(self):
        return self.spec['root']['dag']['tasks']

    def pipeline_spec_proto(self):
        from google.protobuf import json_format
        from kfp.pipeline_spec import pipeline_spec_pb2
        return json_format.ParseDict(self.spec, pipeline_spec_pb2.PipelineSpec())

    def executor(self, label):
        return self.spec['deploymentSpec']['executors'][label]

    def python_entry_points(self):
        """(modules run as `python -m MODULE`, executor class paths) of every
        container command and lifecycle hook, sorted: what a task imports."""
        modules, classes = set(), set()
        for executor in self.spec['deploymentSpec']['executors'].values():
            container = executor.get('container')
            if not container:
                continue
            commands = [list(container.get('command', [])) + list(container.get('args', []))]
            commands += [list(h.get('command', [])) + list(h.get('args', []))
                         for h in container.get('lifecycle', {}).values()]
            for command in commands:
                if len(command) > 2 and command[1] == '-m':
                    modules.add(command[2])
                for flag, value in zip(command, command[1:]):
                    if flag == EXECUTOR_CLASS_FLAG:
                        classes.add(value)
        return sorted(modules), sorted(classes)

    def container_tasks(self):
        """The tasks that run a container (kfp.local handles importers itself)."""
        return sorted(name for name, task in self.tasks.items() if 'container' in self.executor(
            self.spec['components'][task['componentRef']['name']]['executorLabel']))

    def serving_root(self):
        """The staging area the steps name (`serving_root` constants), or None."""
        roots = set()
        for task in self.tasks.values():
            value = task.get('inputs', {}).get('parameters', {}).get(
                SERVING_ROOT_PARAMETER, {}).get('runtimeValue', {}).get('constant')
            if isinstance(value, str):
                roots.add(value)
        if len(roots) > 1:
            raise KfpLocalError('package %s: its steps disagree on %s (%s); recompile it with one '
                                '--serving-root' % (self.path, SERVING_ROOT_PARAMETER,
                                                   ', '.join(sorted(roots))))
        return roots.pop() if roots else None

    def pvc_mounts(self):
        """[(executor label, PVC name, mount path)] from the Kubernetes platform spec."""
        executors = ((self.platform or {}).get('platforms', {}).get('kubernetes', {})
                     .get('deploymentSpec', {}).get('executors', {}))
        found = []
        for label, config in sorted(executors.items()):
            for mount in config.get('pvcMount', []):
                name = mount.get('constant') or mount.get('pvcName')
                if not name:
                    raise KfpLocalError(
                        'package %s: executor %s mounts a PVC chosen at run time (%s); run-local '
                        'maps only PVCs named in the package' % (self.path, label, mount))
                found.append((label, name, mount['mountPath']))
        return found


def _one_line(error):
    return ' '.join(str(error).split())[:400]


def load_package(path) -> LocalPackage:
    """Reads a KFP YAML package or a Vertex PipelineJob JSON; raises KfpLocalError."""
    if not os.path.isfile(path):
        raise KfpLocalError('package %s does not exist: compile it with `tfx-canary kfp compile '
                            '--output %s`' % (path, path))
    if path.endswith('.json'):
        package = _load_vertex_job(path)
    elif path.endswith(('.yaml', '.yml')):
        package = _load_kfp_package(path)
    else:
        raise KfpLocalError('package %s: expected a KFP package (*.yaml) or a Vertex PipelineJob '
                            '(*.json) written by `tfx-canary kfp compile`' % path)
    _check_parses(package)
    unsupported = sorted(label for label, kind in kfp_spec.executor_kinds(package.spec).items()
                         if kind not in RUNNABLE_EXECUTORS)
    if unsupported:
        raise KfpLocalError('package %s has executors kfp.local cannot run (%s): it runs container '
                            'and importer steps only; recompile with `tfx-canary kfp compile`'
                            % (path, ', '.join(unsupported)))
    return package


def _load_kfp_package(path):
    import yaml
    try:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
    except (OSError, yaml.YAMLError) as e:
        raise KfpLocalError('package %s is not readable YAML: %s' % (path, _one_line(e))) from None
    specs = [d for d in documents if isinstance(d, dict) and 'pipelineInfo' in d]
    platforms = [d for d in documents if isinstance(d, dict) and 'platforms' in d]
    if not specs:
        raise KfpLocalError('package %s holds no PipelineSpec (no pipelineInfo): compile it with '
                            '`tfx-canary kfp compile --target kfp`' % path)
    return LocalPackage(path, KFP, specs[0], platforms[0] if platforms else None)


def _load_vertex_job(path):
    try:
        with open(path) as f:
            job = json.load(f)
    except (OSError, ValueError) as e:
        raise KfpLocalError('package %s is not readable JSON: %s' % (path, _one_line(e))) from None
    if not isinstance(job, dict) or 'pipelineSpec' not in job:
        raise KfpLocalError('package %s is not a Vertex PipelineJob (no pipelineSpec): compile it '
                            'with `tfx-canary kfp compile --target vertex`' % path)
    values = job.get('runtimeConfig', {}).get('parameterValues', {})
    return LocalPackage(path, VERTEX, job['pipelineSpec'], None, tuple(sorted(values.items())))


def _check_parses(package):
    try:
        package.pipeline_spec_proto()
    except Exception as e:  # protobuf's ParseError or a missing key: both mean "bad file"
        raise KfpLocalError('package %s is not a valid PipelineSpec: %s'
                            % (package.path, _one_line(e))) from None


# ------------------------------------------------------- runtime arguments

def image_path_here(value):
    """A path inside the image's project folder (/pipeline/..., which the
    Dockerfile fills from this repository) as the same path in this checkout."""
    prefix = kubeflow_configs.IMAGE_PROJECT_DIR + '/'
    if isinstance(value, str) and value.startswith(prefix):
        return os.path.join(PROJECT_ROOT, value[len(prefix):])
    return None


@dataclasses.dataclass(frozen=True)
class Arguments:
    """The runtime arguments of a local run and, for each one run-local chose
    rather than the user, why (printed before the run)."""
    values: Dict[str, object]
    notes: Tuple[str, ...]


def runtime_arguments(package: LocalPackage, params: Dict[str, str]) -> Arguments:
    """--param values typed like `kfp submit` does; the package's defaults that
    point into the image are pointed at this checkout instead."""
    from runners import kfp_submit
    values = dict(kfp_submit.typed_params(package.spec, params))
    defaults = {name: p.get('defaultValue') for name, p in
                package.spec['root'].get('inputDefinitions', {}).get('parameters', {}).items()}
    defaults.update(dict(package.job_parameters))
    notes = []
    for name, default in sorted(defaults.items()):
        if name in values:
            continue
        here = image_path_here(default)
        if here is not None:
            values[name] = here
            notes.append('%s = %s (the image\'s %s, from this checkout; --param %s=... to change)'
                         % (name, here, default, name))
        elif name in dict(package.job_parameters):
            values[name] = default   # Vertex passes the job's runtimeConfig values.
    return Arguments(values, tuple(notes))


# ------------------------------------------------------------------ mounts

def local_mounts(package: LocalPackage, workspace, serving_root):
    """The Mounts of a local run, longest path first.

    KFP: each PVC of the platform spec is a local folder: the one mounted at
    the package's serving root is `serving_root`, any other
    WORKSPACE/volumes/<pvc>. Vertex: the serving root is `serving_root`, the
    rest of Cloud Storage FUSE (/gcs/) is WORKSPACE/gcs/.
    """
    package_root = package.serving_root()
    mounts = []
    if package.target == KFP:
        by_path = {}
        for label, pvc, path in package.pvc_mounts():
            local = serving_root if path == package_root else os.path.join(
                workspace, VOLUMES_DIR, pvc)
            by_path.setdefault((path, local), set()).add(label)
        mounts = [Mount(path, local, frozenset(labels)) for (path, local), labels in by_path.items()]
        on_a_mount = package_root is not None and any(m.translate(package_root) for m in mounts)
        if package_root and not on_a_mount:
            if package_root.startswith('/'):
                raise KfpLocalError(
                    'package %s stages into %s, which no PVC is mounted at: on a cluster every '
                    'pod would stage into its own disk; recompile with --serving-pvc NAME'
                    % (package.path, package_root))
            mounts.append(Mount(package_root, serving_root))
    else:
        if package_root:
            mounts.append(Mount(package_root, serving_root))
        mounts.append(Mount(GCS_FUSE_ROOT, os.path.join(workspace, GCS_DIR)))
    return sorted(mounts, key=lambda m: len(m.path), reverse=True)
