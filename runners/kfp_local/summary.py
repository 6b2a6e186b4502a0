"""The `tfx-canary run` summary of a local KFP run, read from the executor
outputs the tasks wrote (kfp.local records no ML Metadata)."""
from common import mlmd_names as names
from common.mlmd import version_number
from runners.summary import RunSummary

MODEL_EVALUATION = 'ModelEvaluation'   # TFX's type name of the Evaluator's metrics.


def ir_type(type_name):
    """The artifact type title in TFX's IR: tfx.<TFX type name>."""
    return 'tfx.' + type_name


def _first(run, type_name, keep=lambda artifact: True):
    return next((a for a in run.outputs_of_type(ir_type(type_name)) if keep(a)), None)


def _flag(artifact, key):
    if artifact is None or artifact.get(key) is None:
        return None
    return bool(artifact.get(key))


def _is_baseline(artifact):
    return artifact.get(names.HAS_BASELINE) is not None


def summarize(run) -> RunSummary:
    """A RunSummary of a runner.LocalRun, as `tfx-canary run` prints it."""
    from common.tfx_outputs import BASELINE, CANDIDATE, overall_metrics

    examples = _first(run, names.EXAMPLES)
    baseline = _first(run, names.MODEL, _is_baseline)
    model = _first(run, names.MODEL, lambda a: not _is_baseline(a))
    evaluation = _first(run, MODEL_EVALUATION)
    pushed = _first(run, names.PUSHED_MODEL)
    metrics = overall_metrics(evaluation.uri) if evaluation else {}
    baseline_uri = None
    if baseline is not None and baseline.get(names.HAS_BASELINE):
        baseline_uri = 'stable v%d, %s' % (int(baseline.get(names.BASELINE_VERSION)),
                                           baseline.get(names.BASELINE_URI))
    span = examples.get(names.SPAN) if examples else None
    return RunSummary(
        span=int(span) if span is not None else None,
        span_range=examples.get(names.SPAN_RANGE) if examples else None,
        blessed=_flag(_first(run, names.MODEL_BLESSING), names.BLESSED),
        metrics=metrics.get(CANDIDATE, {}), baseline_metrics=metrics.get(BASELINE, {}),
        baseline_uri=baseline_uri, pushed=bool(_flag(pushed, names.PUSHED)),
        pushed_destination=pushed.get(names.PUSHED_DESTINATION) if pushed else None,
        pushed_version=version_number(pushed.get(names.PUSHED_VERSION))
        if _flag(pushed, names.PUSHED) else None,
        not_pushed_reason=(pushed.get(names.NOT_PUSHED_REASON) or None)
        if pushed else None,
        model_uri=model.uri if model else None, seconds=run.seconds,
        run_id=run.run_dir and run.run_dir.rstrip('/').rsplit('/', 1)[-1])
