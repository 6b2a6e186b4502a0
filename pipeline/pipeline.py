"""Wires the tfx-canary components into a TFX pipeline. No logic beyond wiring.

CsvExampleGen (one span) -> StatisticsGen -> ImportSchemaGen -> ExampleValidator
-> ValidationGate -> DriftGate (vs. the baseline's training statistics)
-> Transform -> Trainer -> Evaluator (vs. baseline) -> CanaryPusher.
The baseline is the stable version in rollout.json, read at run time by the
BaselineModel step (no resolver node, so open-source KFP can run the pipeline):
its SavedModel and the statistics of the data it was trained on.
"""
import tensorflow_model_analysis as tfma
# Direct imports rather than `tfx.v1`: that public facade also imports the
# Google Cloud extensions (google.cloud.aiplatform), ~3 s on every start.
from tfx import components as tfx_components
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.proto import trainer_pb2
from tfx.proto import example_gen_pb2, range_config_pb2

from components.baseline.component import (
    BaselineAwareEvaluator, baseline_trainer_executor_spec,
    create_baseline_component)
from components.canary_pusher.component import CanaryPusher
from components.drift_gate.component import DriftGate
from components.span_example_gen import component as span_example_gen
from components.validation_gate.component import ValidationGate
from pipeline.configs import LOCAL_BEAM_ARGS, PipelineConfig


def input_config(config: PipelineConfig):
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name='single_split', pattern=config.span_pattern)])


def output_config(config: PipelineConfig):
    train, eval_ = config.train_eval_hash_buckets
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=train),
        example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=eval_),
    ]))


def range_config(config: PipelineConfig):
    """A fixed span when one is chosen; None lets ExampleGen take the latest."""
    if config.span is None:
        return None
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=config.span, end_span_number=config.span))


def create_example_gen(config: PipelineConfig):
    """TFX's CsvExampleGen for one span (latest or chosen); for a span range the
    components/span_example_gen subclass, which reads every span of the range
    into one Examples artifact. Both have the node id CsvExampleGen."""
    if config.span_range is not None:
        return span_example_gen.CsvExampleGen(
            input_base=config.data_root,
            input_config=input_config(config),
            output_config=output_config(config),
            span_range=tuple(config.span_range)).with_id('CsvExampleGen')
    return tfx_components.CsvExampleGen(
        input_base=config.data_root,
        input_config=input_config(config),
        output_config=output_config(config),
        range_config=range_config(config))


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """AUC and accuracy overall and per slice; blessing needs value thresholds
    met and no AUC regression against the baseline model."""
    no_regression = tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER,
        # Strictly-less-than comparison in TFMA: a tiny epsilon makes "equal" pass.
        absolute={'value': -config.max_auc_regression - 1e-10})
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=config.signatures[0],
            label_key=config.label_key,
            # Stated, not detected: TFMA otherwise loads each model (candidate
            # and baseline) once more just to find out it is a Keras model.
            model_type=tfma.constants.TF_KERAS,
            preprocessing_function_names=['transform_features'])],
        slicing_specs=[tfma.SlicingSpec()] + [
            tfma.SlicingSpec(feature_keys=[f]) for f in config.slice_features],
        # Only the metrics below: TFMA would otherwise also re-compute the Keras
        # model's compiled metrics for every slice and model.
        options=tfma.Options(include_default_metrics={'value': False}),
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name='ExampleCount'),
            tfma.MetricConfig(class_name='AUC', per_slice_thresholds=[overall(
                value_threshold=tfma.GenericValueThreshold(lower_bound={'value': config.min_auc}),
                change_threshold=no_regression)]),
            tfma.MetricConfig(class_name='BinaryAccuracy', per_slice_thresholds=[overall(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={'value': config.min_binary_accuracy}))]),
        ])])


def overall(**threshold):
    """A threshold on the overall slice only: small slices (a payment type seen
    40 times) are reported, but too noisy to gate a release on."""
    return tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()], threshold=tfma.MetricThreshold(**threshold))


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx_pipeline.Pipeline:
    config.validate()
    fingerprint = config.module_fingerprint()
    example_gen = create_example_gen(config)
    statistics_gen = tfx_components.StatisticsGen(examples=example_gen.outputs['examples'])
    schema_gen = ImportSchemaGen(schema_file=config.schema_path)
    example_validator = tfx_components.ExampleValidator(
        statistics=statistics_gen.outputs['statistics'],
        schema=schema_gen.outputs['schema'])
    validation_gate = ValidationGate(
        anomalies=example_validator.outputs['anomalies'],
        allowed_anomalies=config.allowed_anomalies)
    # The baseline: the stable model now serving (rollout.json) and its
    # training statistics, or empty artifacts (has_baseline=0,
    # has_statistics=0) before anything has been staged.
    baseline = create_baseline_component(config)
    drift_gate = DriftGate(
        statistics=statistics_gen.outputs['statistics'],
        baseline_statistics=baseline.outputs['statistics'],
        schema=schema_gen.outputs['schema'],
        examples=example_gen.outputs['examples'],
        allowed_drift=config.allowed_drift)
    # Schema violations are reported first; drift is judged on valid data.
    drift_gate.add_upstream_node(validation_gate)

    transform = tfx_components.Transform(
        examples=example_gen.outputs['examples'],
        schema=schema_gen.outputs['schema'],
        preprocessing_fn=config.preprocessing_fn,
        # Not read by preprocessing_fn; makes code changes re-execute Transform.
        custom_config={'module_fingerprint': fingerprint},
        # StatisticsGen/ExampleValidator already cover the raw data; Transform's
        # own pre/post-transform statistics would double that work.
        disable_statistics=True,
        # No run reads the analyzer cache back (no analyzer_cache input; each
        # run analyzes its own span), so writing it is wasted work: -2.6 s a run.
        disable_analyzer_cache=True)
    transform.add_upstream_node(validation_gate)
    transform.add_upstream_node(drift_gate)

    trainer = tfx_components.Trainer(
        run_fn=config.run_fn,
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        schema=schema_gen.outputs['schema'],
        base_model=baseline.outputs['model'],
        train_args=trainer_pb2.TrainArgs(num_steps=config.train_steps),
        eval_args=trainer_pb2.EvalArgs(num_steps=config.eval_steps),
        custom_config=dict(config.hparams, module_fingerprint=fingerprint),
        # Drops an empty baseline, so fn_args.base_model is None on a first run.
        custom_executor_spec=baseline_trainer_executor_spec())

    # tfx.components.Evaluator that skips an empty baseline and records the
    # baseline it compared against on its outputs (same node id: Evaluator).
    evaluator = BaselineAwareEvaluator(
        examples=example_gen.outputs['examples'],
        model=trainer.outputs['model'],
        baseline_model=baseline.outputs['model'],
        eval_config=eval_config(config))

    pusher = CanaryPusher(
        model=trainer.outputs['model'],
        model_blessing=evaluator.outputs['blessing'],
        model_evaluation=evaluator.outputs['evaluation'],
        serving_root=config.serving_root,
        model_name=config.model_name,
        canary_traffic_percent=config.canary_traffic_percent,
        keep_versions=config.keep_versions,
        tf_serving_root=config.tf_serving_root,
        kserve_storage_uri_prefix=config.kserve_storage_uri_prefix,
        fail_on_stale_baseline=config.fail_on_stale_baseline,
        required_signatures=config.signatures,
        # Staged beside the version: the next run's drift baseline.
        statistics=statistics_gen.outputs['statistics'],
        schema=schema_gen.outputs['schema'],
        examples=example_gen.outputs['examples'])

    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator,
                    validation_gate, baseline, drift_gate, transform, trainer, evaluator,
                    pusher],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_args or LOCAL_BEAM_ARGS))
