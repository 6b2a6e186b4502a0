"""Reads what one local pipeline run did back out of ML Metadata."""
import dataclasses
from typing import Dict, Optional

from ml_metadata.metadata_store import metadata_store

from common import mlmd_names as names
from common.mlmd import event_role, is_output, value_of, version_number
from common.tfx_outputs import (BASELINE, CANDIDATE, anomalies_by_split, drift_measurements,
                                overall_metrics)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    span: Optional[int]
    blessed: Optional[bool]
    metrics: Dict[str, float]
    baseline_metrics: Dict[str, float]
    baseline_uri: Optional[str]
    pushed: bool
    pushed_destination: Optional[str]
    model_uri: Optional[str]
    seconds: float
    span_range: Optional[str] = None   # "A-B" when the run ingested a span range.
    # Why a blessed model was not staged (the baseline moved during the run).
    not_pushed_reason: Optional[str] = None
    run_id: Optional[str] = None       # TFX pipeline run id (its pipeline_run context).
    drift: Optional[str] = None        # The drift gate's verdict in words (None: no gate ran).
    pushed_version: Optional[int] = None   # The version staged (None: nothing staged).

    @property
    def span_used(self):
        """What the run trained on: "1-2" for a span range, else the span."""
        return self.span_range or self.span

    @property
    def stale_baseline(self):
        """Blessed, but refused at push: the baseline it beat no longer serves."""
        return bool(self.blessed and not self.pushed and self.not_pushed_reason)

    def _pushed_line(self):
        if self.pushed:
            return self.pushed_destination
        return 'NOT PUSHED: %s' % self.not_pushed_reason if self.not_pushed_reason else 'nothing pushed'

    def format(self):
        def metric_line(m):
            return ', '.join('%s %.4f' % (k, v) for k, v in sorted(m.items())) or 'n/a'
        lines = [
            'Summary',
            '  span used      : %s' % self.span_used,
            '  metrics (eval) : %s' % metric_line(self.metrics),
            '  baseline       : %s' % ('%s (%s)' % (metric_line(self.baseline_metrics), self.baseline_uri)
                                      if self.baseline_uri else 'none (first model)'),
            *(['  drift          : %s' % self.drift] if self.drift else []),
            '  blessed        : %s' % {True: 'yes', False: 'NO (thresholds not met or regression vs baseline)',
                                      None: 'n/a'}[self.blessed],
            '  pushed to      : %s' % self._pushed_line(),
            '  wall time      : %.1f s' % self.seconds,
        ]
        return '\n'.join(lines)


def _run_executions(store, pipeline_name, run_id):
    """{node_id: execution} of exactly the pipeline run `run_id`.

    Read through the run's own pipeline_run context, never "the newest
    execution of node X": a second run in the same workspace (a scheduled
    retrain overlapping a manual one) writes executions of the same nodes.
    Cached nodes count too: TFX records a CACHED execution in the run's context.
    """
    context = store.get_context_by_type_and_name(names.RUN_CONTEXT, run_id)
    if context is None:
        return {}
    in_run = {e.id: e for e in store.get_executions_by_context(context.id)}
    result = {}
    prefix = pipeline_name + '.'
    for node in store.get_contexts_by_type(names.NODE_CONTEXT):
        if not node.name.startswith(prefix):
            continue
        for execution in store.get_executions_by_context(node.id):
            if execution.id in in_run:
                result[node.name[len(prefix):]] = execution
    return result


def artifacts_by_role(store, execution_id):
    """{(INPUT|OUTPUT, role): [Artifact]} for one execution."""
    events = store.get_events_by_execution_ids([execution_id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    result = {}
    for event in events:
        kind = 'OUTPUT' if is_output(event) else 'INPUT'
        result.setdefault((kind, event_role(event)), []).append(artifacts[event.artifact_id])
    return result


def _span(store, executions):
    """(span, span_range) of the run's examples."""
    if 'CsvExampleGen' not in executions:
        return None, None
    examples = artifacts_by_role(store, executions['CsvExampleGen'].id).get(('OUTPUT', 'examples'), [])
    if not examples:
        return None, None
    # span_range is set only by a span-range ExampleGen (components/span_example_gen).
    return value_of(examples[0], names.SPAN), value_of(examples[0], names.SPAN_RANGE)


def _evaluation(store, executions):
    """dict of the Evaluator's verdict, metrics, baseline and model."""
    result = dict(blessed=None, metrics={}, baseline_metrics={}, baseline_uri=None, model_uri=None)
    if 'Evaluator' not in executions:
        return result
    roles = artifacts_by_role(store, executions['Evaluator'].id)
    blessing = roles.get(('OUTPUT', 'blessing'), [])
    if blessing:
        result['blessed'] = bool(value_of(blessing[0], names.BLESSED))
    evaluation = roles.get(('OUTPUT', 'evaluation'), [])
    if evaluation:
        all_metrics = overall_metrics(evaluation[0].uri)
        result['metrics'] = all_metrics.get(CANDIDATE, {})
        result['baseline_metrics'] = all_metrics.get(BASELINE, {})
    baseline = [a for a in roles.get(('INPUT', 'baseline_model'), [])
                if value_of(a, names.HAS_BASELINE)]  # has_baseline=0: nothing was serving.
    if baseline:
        result['baseline_uri'] = 'stable v%s, %s' % (
            value_of(baseline[0], names.BASELINE_VERSION),
            value_of(baseline[0], names.BASELINE_URI) or baseline[0].uri)
    model = roles.get(('INPUT', 'model'), [])
    result['model_uri'] = model[0].uri if model else None
    return result


def _drift(store, executions):
    """The DriftGate's verdict in one line: what was compared with what, the closest call."""
    if 'DriftGate' not in executions:
        return None
    output = artifacts_by_role(store, executions['DriftGate'].id).get(('OUTPUT', 'drift'), [])
    if not output:
        return None
    artifact = output[0]
    if not value_of(artifact, names.DRIFT_CHECKED):
        return 'not checked: %s' % (value_of(artifact, names.DRIFT_NOTE) or 'no baseline data')
    found = [m for anomalies in (anomalies_by_split(artifact.uri) or {}).values()
             for m in drift_measurements(anomalies)]
    words = '%s vs. %s' % (value_of(artifact, names.DRIFT_SPAN),
                           value_of(artifact, names.DRIFT_BASELINE))
    if not found:
        return words
    closest = max(found, key=lambda m: m.distance / m.threshold if m.threshold else 0)
    drifted = sorted(m.feature for m in found if m.drifted)
    return '%s: %s, closest %s %.4f (threshold %.2f)' % (
        words, 'drifted but allowed: %s' % ', '.join(drifted) if drifted
        else '%d features within thresholds' % len(found),
        closest.feature, closest.distance, closest.threshold)


def _push(store, executions):
    """RunSummary's push fields from the pusher's PushedModel."""
    pusher_id = next((n for n in executions if 'Pusher' in n), None)
    pushed_model = artifacts_by_role(store, executions[pusher_id].id).get(
        ('OUTPUT', 'pushed_model'), []) if pusher_id else []
    if not pushed_model:
        return {'pushed': False, 'pushed_destination': None}
    artifact = pushed_model[0]
    pushed = bool(value_of(artifact, names.PUSHED))
    return {'pushed': pushed, 'pushed_destination': value_of(artifact, names.PUSHED_DESTINATION),
            'not_pushed_reason': value_of(artifact, names.NOT_PUSHED_REASON) or None,
            'pushed_version': version_number(value_of(artifact, names.PUSHED_VERSION)) if pushed else None}


def summarize(connection_config, config, run_id, seconds):
    """The RunSummary of pipeline run `run_id` (its pipeline_run context)."""
    store = metadata_store.MetadataStore(connection_config)
    executions = _run_executions(store, config.pipeline_name, run_id)
    span, span_range = _span(store, executions)
    return RunSummary(span=span, span_range=span_range, seconds=seconds, run_id=run_id,
                      drift=_drift(store, executions), **_push(store, executions),
                      **_evaluation(store, executions))
