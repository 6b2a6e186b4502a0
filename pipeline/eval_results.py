"""Reads TFMA Evaluator outputs (shared by the run summary and the CanaryPusher)."""


def overall_metrics(evaluation_uri):
    """{'candidate': {...}, 'baseline': {...}} overall-slice metrics of an Evaluator output.

    A single-model evaluation (no baseline yet) stores its metrics under model
    name '' — reported here as 'candidate'. Diffs (candidate - baseline) are skipped.
    """
    import tensorflow_model_analysis as tfma
    result = {}
    for metrics_for_slice in tfma.load_metrics(evaluation_uri):
        if metrics_for_slice.slice_key.single_slice_keys:
            continue  # Only the overall slice.
        for kv in metrics_for_slice.metric_keys_and_values:
            if kv.key.is_diff or not kv.value.HasField('double_value'):
                continue
            model = kv.key.model_name or 'candidate'
            result.setdefault(model, {})[kv.key.name] = kv.value.double_value.value
    return result
