"""Every knob of the tfx-canary pipeline, in one dataclass with local defaults.

`PipelineConfig()` runs the bundled taxi spans on a laptop. Runners and the CLI
override fields (`dataclasses.replace`) and call `validate()`, which raises a
`ConfigError` naming the field and the fix.
"""
import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from common import locations
from modules import hparams
from rollout import staging as rollout_staging
from rollout import state as rollout_state
from common.errors import TfxCanaryError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_DATA_ROOT = os.path.join(PROJECT_ROOT, 'data', 'taxi')

# TFX's Beam executors (ExampleGen, StatisticsGen, Transform, Evaluator) each
# build an sdist of the installed TFX for remote workers unless the args name
# a dependency (~1 s and a copy of the tfx tree left under /tmp, per
# component). The DirectRunner never stages it; naming this project's
# setup.py, which is never read locally, skips that build.
_NO_TFX_SDIST = '--setup_file=' + os.path.join(PROJECT_ROOT, 'setup.py')
# Beam on small data: one in-process DirectRunner worker. multi_processing
# spawns workers that each import TensorFlow (~10 s apiece), which only pays
# off once the input is large; the local runner picks by input size.
LOCAL_BEAM_ARGS = ('--direct_running_mode=in_memory', '--direct_num_workers=1', _NO_TFX_SDIST)
# ~500k taxi rows: above this, parallel workers outweigh their start-up cost.
MULTI_PROCESSING_MIN_BYTES = 64 * 2 ** 20


def beam_args_for(input_bytes, cpus=None):
    """DirectRunner args for an input of `input_bytes`: in-memory when small,
    one worker process per core when large."""
    if input_bytes < MULTI_PROCESSING_MIN_BYTES:
        return LOCAL_BEAM_ARGS
    return ('--direct_running_mode=multi_processing',
            '--direct_num_workers=%d' % (cpus or os.cpu_count() or 1), _NO_TFX_SDIST)


class ConfigError(TfxCanaryError):
    """A configuration value is invalid."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # --- names and places
    pipeline_name: str = locations.DEFAULT_PIPELINE_NAME
    model_name: str = locations.DEFAULT_MODEL_NAME
    workspace: str = locations.DEFAULT_WORKSPACE  # Everything a local run writes.
    data_root: str = BUNDLED_DATA_ROOT        # Holds span-N/ folders of CSVs.
    schema_path: str = os.path.join(BUNDLED_DATA_ROOT, 'schema.pbtxt')
    # Overrides for the places derived from `workspace` (None = derived).
    pipeline_root_override: Optional[str] = None
    metadata_path_override: Optional[str] = None
    serving_root_override: Optional[str] = None

    # --- data selection
    span_pattern: str = 'span-{SPAN}/*.csv'
    span: Optional[int] = None                # None = the latest span.
    # (first, last): every span first..last in one run, as one Examples artifact
    # (hash-split train/eval as usual; it records span=last, span_range="first-last").
    # Excludes `span`. None = one span (`span`).
    span_range: Optional[Tuple[int, int]] = None
    train_eval_hash_buckets: Tuple[int, int] = (3, 1)  # train:eval split of each span.
    allowed_anomalies: Tuple[str, ...] = ()   # Features/short descriptions to accept.
    # Features whose drift from the stable model's training data is expected
    # (thresholds: the schema's drift_comparators).
    allowed_drift: Tuple[str, ...] = ()

    # --- training
    module_path: str = 'modules'              # Importable package with the model code.
    train_steps: int = 200          # ~7 epochs of a 5k-row span; more overfits.
    eval_steps: int = 50
    hparams: Dict[str, object] = dataclasses.field(default_factory=dict)

    # Signatures the model code exports (modules/model.py): the Evaluator
    # reads the first; CanaryPusher refuses to stage a model missing any.
    signatures: Tuple[str, ...] = ('serving_default', 'predict_raw')

    # --- evaluation: blessing needs both value thresholds and no regression.
    label_key: str = 'big_tipper_xf'
    # The signature every model exports that maps raw serialized tf.Examples to
    # transformed features (label_key included when the raw label is present):
    # TFMA and `serve`'s live quality derive the label with it.
    transform_signature: str = 'transform_features'
    slice_features: Tuple[str, ...] = ('trip_start_hour', 'payment_type')
    min_auc: float = 0.70
    min_binary_accuracy: float = 0.60
    # How far AUC may fall below the baseline's and still bless. Not 0: on a
    # ~1.2k-example eval split AUC's standard error is ~0.007, so a strict 0
    # would bless or reject equal models by coin flip. 0 = strictly no drop.
    max_auc_regression: float = 0.005

    # --- push / rollout
    # Traffic a newly staged canary starts with.
    canary_traffic_percent: int = rollout_state.DEFAULT_CANARY_PERCENT
    # Newest staged versions kept on disk; stable and canary are never pruned.
    keep_versions: int = rollout_staging.DEFAULT_KEEP_VERSIONS
    # Where TF Serving / KServe see the serving root (None = not written/derived).
    tf_serving_root: Optional[str] = None      # serving_root as TF Serving sees it, e.g. /models
    # Where KServe fetches staged versions from (see README "Serving layout").
    kserve_storage_uri_prefix: Optional[str] = 'pvc://tfx-canary-serving'
    # A blessed model whose baseline stopped serving before the push (another
    # run or a promote got there first) is never staged. False: recorded on
    # the PushedModel and in the run summary (local runs); True: the pusher
    # execution fails too (Kubeflow/Vertex, where task status is the outcome).
    fail_on_stale_baseline: bool = False

    # --- execution
    # None: chosen by input size (beam_args_for); set to override.
    beam_args: Optional[Tuple[str, ...]] = None
    enable_cache: bool = True

    @property
    def pipeline_root(self) -> str:
        return self.pipeline_root_override or locations.pipeline_root_in(self.workspace)

    @property
    def metadata_path(self) -> str:
        return self.metadata_path_override or locations.metadata_path_in(self.workspace)

    @property
    def serving_root(self) -> str:
        return self.serving_root_override or locations.serving_root_in(self.workspace)

    def module_fingerprint(self) -> str:
        """sha256 of the model code package's .py files (module_path).

        run_fn/preprocessing_fn are import paths, which TFX's cache key does not
        look inside (unlike module_file): without this, editing modules/model.py
        would hit the cache and silently keep the old model. Recorded in the
        Trainer's and Transform's custom_config, so lineage shows it too.
        """
        import hashlib
        import importlib.util
        spec = importlib.util.find_spec(self.module_path)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError('config field module_path=%r: not an importable package'
                              % self.module_path)
        digest = hashlib.sha256()
        for folder in spec.submodule_search_locations:
            for name in sorted(os.listdir(folder)):
                if name.endswith('.py'):
                    digest.update(name.encode() + b'\0')
                    with open(os.path.join(folder, name), 'rb') as f:
                        digest.update(f.read())
        return digest.hexdigest()[:16]

    @property
    def run_fn(self) -> str:
        return self.module_path + '.model.run_fn'

    @property
    def preprocessing_fn(self) -> str:
        return self.module_path + '.preprocessing.preprocessing_fn'

    def validate(self) -> 'PipelineConfig':
        """Raises ConfigError for the first invalid field; returns self."""
        def fail(field, problem):
            raise ConfigError('config field %s=%r: %s' % (field, getattr(self, field), problem))

        if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', self.pipeline_name or ''):
            fail('pipeline_name', 'use letters, digits, ".", "_" and "-", starting with a letter or digit')
        if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', self.model_name or ''):
            fail('model_name', 'use letters, digits, ".", "_" and "-" (it becomes a folder name)')
        if '{SPAN}' not in self.span_pattern:
            fail('span_pattern', 'must contain {SPAN}, e.g. "span-{SPAN}/*.csv"')
        if self.span is not None and (not isinstance(self.span, int) or self.span < 0):
            fail('span', 'must be a span number >= 0, or None for the latest span')
        if self.span_range is not None:
            r = self.span_range
            if (not isinstance(r, (tuple, list)) or len(r) != 2
                    or any(isinstance(v, bool) or not isinstance(v, int) for v in r)):
                fail('span_range', 'must be two span numbers (first, last), e.g. (1, 3), '
                                   'or None for a single span')
            if r[0] < 0:
                fail('span_range', 'span numbers must be >= 0')
            if r[0] > r[1]:
                fail('span_range', 'the first span must not come after the last, e.g. (%d, %d)'
                                   % (r[1], r[0]))
            if self.span is not None:
                fail('span_range', 'set either span (one span, here %r) or span_range '
                                   '(several spans), not both' % self.span)
        if (not isinstance(self.signatures, (tuple, list)) or not self.signatures
                or not all(isinstance(n, str) and n for n in self.signatures)):
            fail('signatures', 'must name at least one signature the model exports, the '
                               'serving one first, e.g. ("serving_default", "predict_raw")')
        buckets = self.train_eval_hash_buckets
        if len(buckets) != 2 or any(not isinstance(b, int) or b < 1 for b in buckets):
            fail('train_eval_hash_buckets', 'must be two positive integers (train, eval)')
        for field in ('train_steps', 'eval_steps'):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                fail(field, 'must be a positive integer')
        for field in ('min_auc', 'min_binary_accuracy', 'max_auc_regression'):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                fail(field, 'must be a number between 0 and 1')
        if not isinstance(self.canary_traffic_percent, int) or not 0 <= self.canary_traffic_percent <= 100:
            fail('canary_traffic_percent', 'must be an integer percent between 0 and 100')
        if (isinstance(self.keep_versions, bool) or not isinstance(self.keep_versions, int)
                or self.keep_versions < rollout_staging.MIN_KEEP_VERSIONS):
            fail('keep_versions', 'must be a whole number >= %d (stable and canary are kept '
                                  'on top of it)' % rollout_staging.MIN_KEEP_VERSIONS)
        try:
            hparams.hparams_from(self.hparams)
        except ValueError as e:
            fail('hparams', str(e))
        return self
