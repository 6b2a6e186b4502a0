"""Cluster knobs for running the pipeline on Kubeflow Pipelines v2 or Vertex AI.

`PipelineConfig` says *what* the pipeline does; `KubeflowConfig` says *where*
it runs: the container image, the pipeline root, the serving root every pod
must share, per-step CPU/memory/GPU and where Beam executes. `validate()`
raises `pipeline.configs.ConfigError` naming the field and the fix.
"""
import dataclasses
import re
from typing import Dict, Optional, Tuple

from pipeline.configs import ConfigError

TARGETS = ('kfp', 'vertex')
BEAM_RUNNERS = ('direct', 'dataflow', 'flink', 'spark')

# Where the Dockerfile puts the bundled taxi spans and schema inside the image,
# so a compiled pipeline has working defaults before data moves to a bucket.
IMAGE_PROJECT_DIR = '/pipeline'
IMAGE_DATA_ROOT = IMAGE_PROJECT_DIR + '/data/taxi'
IMAGE_SCHEMA_PATH = IMAGE_DATA_ROOT + '/schema.pbtxt'

# The accelerator name each backend understands: open-source KFP puts it into
# the pod's resource limits verbatim (a Kubernetes extended resource), Vertex
# picks a machine with that accelerator type.
DEFAULT_GPU_TYPE = {'kfp': 'nvidia.com/gpu', 'vertex': 'NVIDIA_TESLA_T4'}

# Kubernetes quantities (what `kubectl` accepts): "4", "500m"; "16G", "512Mi".
_CPU_RE = re.compile(r'^(\d+(\.\d+)?)(m?)$')
_MEMORY_RE = re.compile(r'^(\d+(\.\d+)?)(E|P|T|G|M|K|Ei|Pi|Ti|Gi|Mi|Ki)?$')
_MEMORY_FACTOR = {  # Bytes per unit; KFP's float fields count decimal gigabytes.
    None: 1, 'K': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12, 'P': 1e15, 'E': 1e18,
    'Ki': 2 ** 10, 'Mi': 2 ** 20, 'Gi': 2 ** 30, 'Ti': 2 ** 40, 'Pi': 2 ** 50, 'Ei': 2 ** 60,
}
_IMAGE_RE = re.compile(r'^[a-z0-9][a-z0-9._/:@-]*$')
_K8S_NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')


def cpu_cores(quantity: str) -> float:
    """'4' -> 4.0, '500m' -> 0.5 (validated quantity)."""
    number, _, milli = _CPU_RE.match(quantity).groups()
    return float(number) / (1000 if milli else 1)


def memory_gigabytes(quantity: str) -> float:
    """'16G' -> 16.0, '512Mi' -> 0.536870912 (decimal GB, as KFP's float fields)."""
    number, _, unit = _MEMORY_RE.match(quantity).groups()
    return float(number) * _MEMORY_FACTOR[unit] / 1e9


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU/memory (Kubernetes quantities) and optional GPUs for one step."""
    cpu: str
    memory: str
    gpu_count: int = 0
    gpu_type: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
    target: str = 'kfp'                       # 'kfp' (open-source KFP) or 'vertex'.
    image: Optional[str] = None               # e.g. europe-docker.pkg.dev/PROJECT/ml/tfx-canary:1.0
    # Where TFX writes artifacts. KFP: gs://, s3://, minio:// as the cluster's
    # object store allows (see docs/kubeflow.md); Vertex: gs:// only.
    pipeline_root: Optional[str] = None

    # --- data and serving, as the pods see them
    data_root: str = IMAGE_DATA_ROOT          # Runtime parameter `data_root` (default).
    schema_path: str = IMAGE_SCHEMA_PATH      # Runtime parameter `schema_path` (default).
    # The staging area the CanaryPusher writes and BaselineModel reads. It must be
    # the same storage for every run and pod: a ReadWriteMany PVC on KFP
    # (`serving_pvc`), a Cloud Storage FUSE path (/gcs/BUCKET/...) on Vertex.
    serving_root: str = '/serving'
    serving_pvc: Optional[str] = None         # KFP only: PVC mounted at serving_root.

    # --- resources (requests = limits: Guaranteed QoS on Kubernetes, and
    # Vertex sizes the machine from the limits)
    trainer_cpu: str = '4'
    trainer_memory: str = '16G'
    gpu_count: int = 1                        # GPUs for the Trainer; 0 = train on CPU.
    gpu_type: Optional[str] = None            # None = DEFAULT_GPU_TYPE[target].
    # Node labels the Trainer pod must match on KFP, e.g.
    # {'cloud.google.com/gke-accelerator': 'nvidia-tesla-t4'} for a GKE GPU pool.
    gpu_node_selector: Dict[str, str] = dataclasses.field(default_factory=dict)
    beam_cpu: str = '2'                       # Beam components (ExampleGen, StatisticsGen,
    beam_memory: str = '8G'                   # Transform, Evaluator): the Beam driver pod.
    default_cpu: str = '1'                    # Every other step (schema, gates,
    default_memory: str = '2G'                # baseline, pusher).

    # --- Beam
    beam_runner: str = 'direct'               # direct | dataflow | flink | spark
    beam_args: Tuple[str, ...] = ()           # Extra args, e.g. --project=... for Dataflow.

    @property
    def effective_gpu_type(self) -> Optional[str]:
        if self.gpu_count == 0:
            return None
        return self.gpu_type or DEFAULT_GPU_TYPE[self.target]

    def trainer_resources(self) -> Resources:
        return Resources(self.trainer_cpu, self.trainer_memory, self.gpu_count,
                         self.effective_gpu_type)

    def beam_resources(self) -> Resources:
        return Resources(self.beam_cpu, self.beam_memory)

    def default_resources(self) -> Resources:
        return Resources(self.default_cpu, self.default_memory)

    def pipeline_beam_args(self) -> Tuple[str, ...]:
        """The Beam args every Beam component gets: runner choice + extras."""
        args = list(self.beam_args)
        given = {a.split('=', 1)[0] for a in args}

        def add(flag, value):
            if flag not in given:
                args.append('%s=%s' % (flag, value))

        if self.beam_runner == 'direct':
            # One worker per requested core: DirectRunner's default (0) counts the
            # node's cores, not the pod's, and would oversubscribe the node.
            workers = max(1, int(cpu_cores(self.beam_cpu)))
            add('--direct_running_mode', 'multi_processing' if workers > 1 else 'in_memory')
            add('--direct_num_workers', str(workers))
        else:
            add('--runner', {'dataflow': 'DataflowRunner', 'flink': 'FlinkRunner',
                             'spark': 'SparkRunner'}[self.beam_runner])
            # Remote Beam workers import modules.preprocessing & co by module
            # path: they need the same image (it carries the Beam SDK harness).
            if self.beam_runner == 'dataflow':
                add('--sdk_container_image', self.image)
            else:
                add('--environment_type', 'DOCKER')
                add('--environment_config', self.image)
        return tuple(args)

    def validate(self) -> 'KubeflowConfig':
        """Raises ConfigError for the first invalid field; returns self."""
        def fail(field, problem):
            raise ConfigError('kubeflow config field %s=%r: %s'
                              % (field, getattr(self, field), problem))

        if self.target not in TARGETS:
            fail('target', 'must be one of %s' % ', '.join(TARGETS))
        if not self.image or not _IMAGE_RE.match(self.image):
            fail('image', 'set the container image built from the Dockerfile, '
                          'e.g. --image europe-docker.pkg.dev/PROJECT/ml/tfx-canary:1.0')
        if not self.pipeline_root:
            fail('pipeline_root', 'set where artifacts go, e.g. --pipeline-root gs://BUCKET/tfx-canary')
        if self.target == 'vertex' and not self.pipeline_root.startswith('gs://'):
            fail('pipeline_root', 'Vertex AI Pipelines needs a gs:// pipeline root')
        for field in ('data_root', 'schema_path', 'serving_root'):
            if not getattr(self, field):
                fail(field, 'must not be empty')
        self._validate_serving_root(fail)
        for field in ('trainer_cpu', 'beam_cpu', 'default_cpu'):
            if not _CPU_RE.match(str(getattr(self, field))) or cpu_cores(getattr(self, field)) <= 0:
                fail(field, 'must be a Kubernetes CPU quantity above 0, e.g. "4" or "500m"')
        for field in ('trainer_memory', 'beam_memory', 'default_memory'):
            value = str(getattr(self, field))
            if not _MEMORY_RE.match(value) or memory_gigabytes(value) <= 0:
                fail(field, 'must be a Kubernetes memory quantity above 0, e.g. "16G" or "512Mi"')
        if isinstance(self.gpu_count, bool) or not isinstance(self.gpu_count, int) or self.gpu_count < 0:
            fail('gpu_count', 'must be a whole number >= 0 (0 trains on CPU)')
        gpu_type = self.effective_gpu_type
        if gpu_type is not None:
            if self.target == 'kfp' and '/' not in gpu_type:
                fail('gpu_type', 'on KFP this is the Kubernetes resource name, e.g. nvidia.com/gpu')
            if self.target == 'vertex' and not re.fullmatch(r'[A-Z0-9_]+', gpu_type):
                fail('gpu_type', 'on Vertex this is an accelerator type, '
                                 'e.g. NVIDIA_TESLA_T4 or NVIDIA_L4')
        if self.gpu_node_selector and self.target != 'kfp':
            fail('gpu_node_selector', 'only applies to open-source KFP; Vertex picks the machine '
                                      'from gpu_type')
        self._validate_beam(fail)
        return self

    def _validate_serving_root(self, fail):
        local = self.serving_root.startswith('/')
        if self.target == 'kfp':
            if self.serving_pvc is not None and not _K8S_NAME_RE.match(self.serving_pvc):
                fail('serving_pvc', 'must be the name of an existing PersistentVolumeClaim')
            if local and not self.serving_pvc:
                # Without a shared volume every pod would stage into, and look
                # for the baseline on, its own throw-away disk.
                fail('serving_root', 'a local path on KFP must be a shared volume: set --serving-pvc '
                                     'to a ReadWriteMany PVC mounted there')
            if not local and self.serving_pvc:
                fail('serving_pvc', 'only applies to a local serving_root path (the mount point)')
        else:
            if self.serving_pvc:
                fail('serving_pvc', 'Vertex AI cannot mount PVCs; use a /gcs/BUCKET/... serving root')
            if not self.serving_root.startswith(('/gcs/', 'gs://')):
                fail('serving_root', 'on Vertex use Cloud Storage, e.g. /gcs/BUCKET/serving '
                                     '(the FUSE mount every Vertex pipeline step has)')

    def _validate_beam(self, fail):
        if self.beam_runner not in BEAM_RUNNERS:
            fail('beam_runner', 'must be one of %s' % ', '.join(BEAM_RUNNERS))
        bad = [a for a in self.beam_args if not a.startswith('--')]
        if bad:
            fail('beam_args', 'each must look like --flag=value; got %r' % bad[0])
        given = {a.split('=', 1)[0] for a in self.beam_args}
        if '--runner' in given:
            fail('beam_args', 'choose the runner with beam_runner (--beam-runner), not --runner')
        required = {
            'dataflow': ('--project', '--region', '--temp_location'),
            'flink': ('--flink_master',),
            'spark': ('--spark_master_url',),
        }.get(self.beam_runner, ())
        missing = [flag for flag in required if flag not in given]
        if missing:
            fail('beam_args', 'the %s runner needs %s (pass --beam-arg %s=...)'
                 % (self.beam_runner, ', '.join(missing), missing[0]))
