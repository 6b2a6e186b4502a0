"""Synthetic tfx-canary runs in a real SQLite ML Metadata store, with the payload
files that the run summary and `tfx-canary lineage` read back.

bench/lineage_bench.py's SyntheticPipeline is the one builder of
tfx-canary-shaped stores (the types, contexts and events TFX 1.16 writes for a
run). `RunStore` extends it with what unit tests need beyond the records:

  * artifact URIs under a tmp folder instead of /bench/..., so files can exist;
  * each run's Evaluator output as real TFMA metrics files: TFMA's own
    conversion to MetricsForSlice, written as the TFRecords its writer makes;
  * per-run Trainer properties (hyperparameters, module fingerprint, steps),
    as `tfx-canary run --model-hparam/--train-steps` record them;
  * a blessed model whose push was refused because the baseline moved,
    recorded the way CanaryPusher records it.
"""
import dataclasses
import json
import os
from typing import Dict, Optional

from ml_metadata.metadata_store import metadata_store

from bench import lineage_bench
from common import mlmd_names as names

PIPELINE = lineage_bench.PIPELINE
MODEL = lineage_bench.MODEL_NAME
_BENCH_ROOT = '/bench'   # Where SyntheticPipeline points its artifact URIs.


@dataclasses.dataclass(frozen=True)
class SyntheticRun:
    """What one synthetic run recorded (the expected answers of a test)."""
    run_id: str                    # Its pipeline_run context name.
    span: int
    version: Optional[int]         # Pushed version; None when nothing was staged.
    baseline_version: Optional[int]  # The stable version it was judged against.
    model_uri: str                 # The Trainer's Model.
    evaluation_uri: str            # The Evaluator's ModelEvaluation (metrics files).


def write_evaluation(uri, candidate, baseline=None, slices=None, baseline_slices=None):
    """Writes TFMA metrics files at `uri` as the Evaluator does.

    candidate / baseline: {metric: value} on the overall slice. Without a
    baseline the metrics are stored under model name '' (TFMA's single-model
    layout); with one, under 'candidate' and 'baseline' plus the diffs
    (candidate - baseline). slices / baseline_slices: {((column, value),):
    {metric: value}} for single-feature slices.
    """
    import tensorflow as tf
    from tensorflow_model_analysis.metrics import metric_types
    from tensorflow_model_analysis.writers import metrics_plots_and_validations_writer as writer

    def keyed(metrics, model_name, is_diff=False):
        return {metric_types.MetricKey(name=name, model_name=model_name, example_weighted=False,
                                       is_diff=is_diff): value
                for name, value in metrics.items()}

    def one_slice(values, base):
        if baseline is None:
            return keyed(values, '')
        return {**keyed(values, 'candidate'), **keyed(base, 'baseline'),
                **keyed({k: values[k] - base[k] for k in values if k in base}, 'candidate',
                        is_diff=True)}

    rows = [((), one_slice(candidate, baseline))]
    rows += [(key, one_slice(values, (baseline_slices or {}).get(key, {})))
             for key, values in (slices or {}).items()]
    os.makedirs(uri, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(uri, 'metrics-00000-of-00001.tfrecord')) as f:
        for row in rows:
            f.write(writer.convert_slice_metrics_to_proto(row, None).SerializeToString())


class RunStore(lineage_bench.SyntheticPipeline):
    """A store at `folder`/metadata.sqlite that records runs with `add()`."""

    def __init__(self, folder, **kwargs):
        self.folder = str(folder)
        self.path = os.path.join(self.folder, 'metadata.sqlite')
        self._overrides = {}
        self._made = {}
        self._run_context = None
        os.makedirs(self.folder, exist_ok=True)
        super().__init__(metadata_store.MetadataStore(self.connection_config()), **kwargs)

    def connection_config(self):
        return lineage_bench.sqlite_config(self.path)

    # --- hooks into SyntheticPipeline

    def _artifact(self, type_name, uri, props=None, custom=None):
        uri = os.path.join(self.folder, 'pipeline', os.path.relpath(uri, _BENCH_ROOT))
        artifact = super()._artifact(type_name, uri, props, custom)
        self._made.setdefault(type_name, []).append(artifact)
        return artifact

    def _context(self, type_name, name):
        context = super()._context(type_name, name)
        if type_name == names.RUN_CONTEXT:
            self._run_context = context
        return context

    def _execute(self, node, run_ctx, *args, **custom):
        custom.update(self._overrides.get(node, {}))
        return super()._execute(node, run_ctx, *args, **custom)

    # --- runs

    def add(self, metrics: Dict[str, float], baseline_metrics=None, slices=None,
            baseline_slices=None, hparams=None, module_fingerprint=None, train_steps=None,
            **add_run) -> SyntheticRun:
        """One run whose Evaluator measured `metrics` (and `baseline_metrics` for
        the stable model, when one served); add_run: SyntheticPipeline.add_run's
        span_range / blessed / pusher."""
        judged_against = self.stable
        trainer = {}
        if hparams is not None or module_fingerprint is not None:
            config = dict(hparams or {})
            if module_fingerprint is not None:
                config['module_fingerprint'] = module_fingerprint
            trainer['custom_config'] = json.dumps(config, sort_keys=True)
        if train_steps is not None:
            trainer['train_args'] = json.dumps({'num_steps': train_steps})
        self._overrides = {'Trainer': trainer}
        try:
            version = self.add_run(**add_run)
        finally:
            self._overrides = {}
        evaluation = self._made['ModelEvaluation'][-1]
        write_evaluation(evaluation.uri, metrics,
                         baseline_metrics if judged_against is not None else None,
                         slices, baseline_slices)
        span = add_run['span_range'][1] if add_run.get('span_range') else self.runs
        return SyntheticRun(run_id=self._run_context.name, span=span, version=version,
                            baseline_version=judged_against,
                            model_uri=self._made['Model'][-1].uri, evaluation_uri=evaluation.uri)

    def add_refused_push(self, reason, metrics, baseline_metrics=None) -> SyntheticRun:
        """A blessed run whose CanaryPusher staged nothing: the stable version it
        was judged against stopped serving during the run (compare-and-set)."""
        run = self.add(metrics, baseline_metrics, blessed=True, pusher=False)
        pushed = self._artifact('PushedModel', '%s/%s/CanaryPusher/%d' % (
            _BENCH_ROOT, self.pipeline_name, self.runs), custom={
                names.PUSHED: 0, names.MODEL_NAME: self.model_name,
                names.NOT_PUSHED_REASON: reason, names.STALE_BASELINE: 1})
        self._execute('CanaryPusher', self._run_context, inputs=[
            ('model', self._made['Model'][-1]),
            ('model_evaluation', self._made['ModelEvaluation'][-1]),
            ('model_blessing', self._made['ModelBlessing'][-1])],
            outputs=[('pushed_model', pushed)], model_name=self.model_name)
        return run
