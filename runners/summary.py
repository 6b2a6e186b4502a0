"""Reads what one local pipeline run did back out of ML Metadata."""
import dataclasses
from typing import Dict, Optional

from ml_metadata.metadata_store import metadata_store

from pipeline.eval_results import overall_metrics


@dataclasses.dataclass
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

    @property
    def span_used(self):
        """What the run trained on: "1-2" for a span range, else the span."""
        return self.span_range or self.span

    def format(self):
        def metric_line(m):
            return ', '.join('%s %.4f' % (k, v) for k, v in sorted(m.items())) or 'n/a'
        lines = [
            'Summary',
            '  span used      : %s' % self.span_used,
            '  metrics (eval) : %s' % metric_line(self.metrics),
            '  baseline       : %s' % ('%s (%s)' % (metric_line(self.baseline_metrics), self.baseline_uri)
                                      if self.baseline_uri else 'none (first model)'),
            '  blessed        : %s' % {True: 'yes', False: 'NO (thresholds not met or regression vs baseline)',
                                      None: 'n/a'}[self.blessed],
            '  pushed to      : %s' % (self.pushed_destination if self.pushed else 'nothing pushed'),
            '  wall time      : %.1f s' % self.seconds,
        ]
        return '\n'.join(lines)


def last_execution_id(connection_config):
    store = metadata_store.MetadataStore(connection_config)
    executions = store.get_executions()
    return max((e.id for e in executions), default=0)


def _node_executions(store, pipeline_name, first_execution_id):
    """{node_id: newest execution after first_execution_id} for this pipeline."""
    latest = {}
    prefix = pipeline_name + '.'
    for context in store.get_contexts_by_type('node'):
        if not context.name.startswith(prefix):
            continue
        node_id = context.name[len(prefix):]
        for execution in store.get_executions_by_context(context.id):
            if execution.id > first_execution_id and (
                    node_id not in latest or execution.id > latest[node_id].id):
                latest[node_id] = execution
    return latest


def artifacts_by_role(store, execution_id):
    """{(INPUT|OUTPUT, role): [Artifact]} for one execution."""
    from ml_metadata.proto import metadata_store_pb2
    events = store.get_events_by_execution_ids([execution_id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    result = {}
    for event in events:
        kind = 'OUTPUT' if event.type in (metadata_store_pb2.Event.OUTPUT,
                                          metadata_store_pb2.Event.DECLARED_OUTPUT) else 'INPUT'
        role = event.path.steps[0].key if event.path.steps else ''
        result.setdefault((kind, role), []).append(artifacts[event.artifact_id])
    return result


def _prop(artifact, name):
    for props in (artifact.custom_properties, artifact.properties):
        if name in props:
            value = props[name]
            return getattr(value, value.WhichOneof('value'))
    return None


def summarize(connection_config, config, first_execution_id, seconds):
    store = metadata_store.MetadataStore(connection_config)
    executions = _node_executions(store, config.pipeline_name, first_execution_id)
    span = span_range = None
    if 'CsvExampleGen' in executions:
        examples = artifacts_by_role(store, executions['CsvExampleGen'].id).get(('OUTPUT', 'examples'), [])
        span = _prop(examples[0], 'span') if examples else None
        # Set only by a span-range ExampleGen (components/span_example_gen); span is its newest.
        span_range = _prop(examples[0], 'span_range') if examples else None
    blessed, metrics, baseline_metrics, baseline_uri, model_uri = None, {}, {}, None, None
    if 'Evaluator' in executions:
        roles = artifacts_by_role(store, executions['Evaluator'].id)
        blessing = roles.get(('OUTPUT', 'blessing'), [])
        if blessing:
            blessed = bool(_prop(blessing[0], 'blessed'))
        evaluation = roles.get(('OUTPUT', 'evaluation'), [])
        if evaluation:
            all_metrics = overall_metrics(evaluation[0].uri)
            metrics = all_metrics.get('candidate', {})
            baseline_metrics = all_metrics.get('baseline', {})
        baseline = [a for a in roles.get(('INPUT', 'baseline_model'), [])
                    if _prop(a, 'has_baseline')]  # has_baseline=0: nothing was serving.
        baseline_uri = ('stable v%s, %s' % (_prop(baseline[0], 'baseline_version'),
                                            _prop(baseline[0], 'baseline_uri') or baseline[0].uri)
                        if baseline else None)
        model = roles.get(('INPUT', 'model'), [])
        model_uri = model[0].uri if model else None
    pushed, destination = False, None
    pusher_id = next((n for n in executions if 'Pusher' in n), None)
    if pusher_id:
        pushed_model = artifacts_by_role(store, executions[pusher_id].id).get(('OUTPUT', 'pushed_model'), [])
        if pushed_model:
            pushed = bool(_prop(pushed_model[0], 'pushed'))
            destination = _prop(pushed_model[0], 'pushed_destination')
    return RunSummary(span=span, blessed=blessed, metrics=metrics, baseline_metrics=baseline_metrics,
                      baseline_uri=baseline_uri, pushed=pushed, pushed_destination=destination,
                      model_uri=model_uri, seconds=seconds, span_range=span_range)
