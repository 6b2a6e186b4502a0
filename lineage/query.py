"""The ML Metadata queries behind `tfx-canary lineage`.

Everything goes through MLMD's own query machinery rather than walking events
one by one: `get_lineage_subgraph` with LineageSubgraphQueryOptions (starting
node filters, direction, hop limits and ending-node filters) for provenance,
filter queries in ListOptions to find the pushed model of a version or a
pipeline's runs, and `get_*_by_context` for what one run or rollout holds.
Each `show` costs a handful of queries whatever the number of runs in the
store (see bench/lineage_bench.py).
"""

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from common import mlmd_names as names
from common.mlmd import event_role as role_of
from common.mlmd import value_of
from lineage.errors import NotFoundError, PipelineNotFoundError
from rollout import audit

Options = metadata_store_pb2.LineageSubgraphQueryOptions
Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution

# INTERNAL_OUTPUT is a resolver "producing" an artifact it only selected; it
# is not provenance, so it never counts as the producer.
_OUTPUT_EVENTS = (Event.OUTPUT, Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (Event.INPUT, Event.DECLARED_INPUT)
# Upstream from a pushed model the chain is Pusher, Model, Trainer,
# transformed examples, Transform, Examples, ExampleGen: 7 hops; 12 leaves
# room for a custom component in between without reaching far back (other
# models end the walk anyway).
UPSTREAM_HOPS = 12
# Examples -> StatisticsGen -> statistics -> ExampleValidator -> anomalies -> gate.
DATA_CHECK_HOPS = 5
DATA_CHECK_TYPES = ('StatisticsGen', 'ExampleValidator', 'ValidationGate', 'DriftGate')
# MLMD caps the starting nodes of one lineage query (it silently keeps 101).
MAX_STARTING_NODES = 100
# Only fetch what is read: the Python client fetches types with extra calls.
_GRAPH_MASK = ['artifacts', 'executions', 'events']
_GRAPH_MASK_WITH_CONTEXTS = _GRAPH_MASK + ['contexts', 'associations']


def short_type(type_name):
    """'tfx.components.trainer.component.Trainer' -> 'Trainer'."""
    return (type_name or '').rsplit('.', 1)[-1]


def is_a(execution, component):
    """True for the component's executions and its subclasses' (which are
    named after the subclass, e.g. BaselineAwareEvaluator for an Evaluator)."""
    return short_type(execution.type).endswith(component)


def state_name(execution):
    return Execution.State.Name(execution.last_known_state)


def quote(text):
    """A string literal for an MLMD filter query."""
    return "'" + str(text).replace('\\', '\\\\').replace("'", "\\'") + "'"


class Subgraph:
    """One or more LineageGraph answers merged, indexed for lookups."""

    def __init__(self):
        self.artifacts = {}
        self.executions = {}
        self.contexts = {}
        self.events = []
        self._event_keys = set()
        self.execution_contexts = {}

    def _add_events(self, events):
        # Chunked or repeated queries return the same edge more than once.
        for event in events:
            key = (event.execution_id, event.artifact_id, event.type, role_of(event))
            if key not in self._event_keys:
                self._event_keys.add(key)
                self.events.append(event)

    def add(self, graph):
        """Merges a LineageGraph (one get_lineage_subgraph answer)."""
        self.artifacts.update((a.id, a) for a in graph.artifacts)
        self.executions.update((e.id, e) for e in graph.executions)
        self.contexts.update((c.id, c) for c in graph.contexts)
        self._add_events(graph.events)
        for association in graph.associations:
            self.execution_contexts.setdefault(association.execution_id, set()).add(
                association.context_id)
        return self

    def add_subgraph(self, other):
        """Merges another Subgraph."""
        self.artifacts.update(other.artifacts)
        self.executions.update(other.executions)
        self.contexts.update(other.contexts)
        self._add_events(other.events)
        for execution_id, context_ids in other.execution_contexts.items():
            self.execution_contexts.setdefault(execution_id, set()).update(context_ids)
        return self

    def producers(self, artifact_id):
        """Executions that output the artifact, the original (oldest) first."""
        ids = {e.execution_id for e in self.events
               if e.artifact_id == artifact_id and e.type in _OUTPUT_EVENTS}
        return [self.executions[i] for i in sorted(ids) if i in self.executions]

    def producer(self, artifact_id, prefer_type=None):
        """The execution that really made an artifact.

        A cached re-run records another execution with an OUTPUT event to the
        same artifact; the COMPLETE one made it.
        """
        found = self.producers(artifact_id)
        if prefer_type:
            found = [e for e in found if is_a(e, prefer_type)] or found
        complete = [e for e in found if e.last_known_state == Execution.COMPLETE]
        return (complete or found or [None])[0]

    def consumers(self, artifact_id, type_suffix=None):
        ids = {e.execution_id for e in self.events
               if e.artifact_id == artifact_id and e.type in _INPUT_EVENTS}
        found = [self.executions[i] for i in sorted(ids) if i in self.executions]
        if type_suffix:
            found = [e for e in found if is_a(e, type_suffix)]
        return found

    def _linked(self, execution_id, kinds, role):
        ids = [e.artifact_id for e in self.events
               if e.execution_id == execution_id and e.type in kinds
               and (role is None or role_of(e) == role)]
        return [self.artifacts[i] for i in sorted(set(ids)) if i in self.artifacts]

    def inputs(self, execution_id, role=None):
        return self._linked(execution_id, _INPUT_EVENTS, role)

    def outputs(self, execution_id, role=None):
        return self._linked(execution_id, _OUTPUT_EVENTS, role)

    def run_of(self, execution_id):
        """The pipeline_run context name of an execution, if fetched."""
        for context_id in sorted(self.execution_contexts.get(execution_id, ())):
            context = self.contexts.get(context_id)
            if context is not None and context.type == names.RUN_CONTEXT:
                return context.name
        return None


class LineageQueries:
    """Read-only lineage questions about one pipeline in one MLMD store."""

    def __init__(self, store, pipeline_name):
        self.store = store
        self.pipeline_name = pipeline_name
        self.stats = {'queries': 0}
        self._pipeline = None
        self._contexts = {}

    def _count(self, n=1):
        self.stats['queries'] += n

    # ------------------------------------------------------------ pipeline

    def pipeline_context(self):
        """The pipeline's context; PipelineNotFoundError if the store lacks it."""
        if self._pipeline is not None:
            return self._pipeline
        self._count()
        context = self.store.get_context_by_type_and_name(
            names.PIPELINE_CONTEXT, self.pipeline_name)
        if context is None:
            self._count()
            others = sorted(c.name for c in self.store.get_contexts_by_type(
                names.PIPELINE_CONTEXT))
            where = self.store.description
            if others:
                raise PipelineNotFoundError(
                    f'{where} has no runs of pipeline {self.pipeline_name!r}; it '
                    f'holds pipeline(s) {", ".join(others)}: pass --pipeline-name')
            raise PipelineNotFoundError(
                f'{where} holds no TFX pipeline runs (empty store?): run '
                f'`tfx-canary run` first, or point --metadata-path at a '
                f'workspace that has run')
        self._pipeline = context
        return context

    def _in_pipeline(self):
        # Same alias: both conditions must hold for one attributed context.
        return (f"contexts_a.type = {quote(names.PIPELINE_CONTEXT)} AND "
                f"contexts_a.name = {quote(self.pipeline_name)}")

    # ------------------------------------------------------------ runs

    def run_contexts(self, limit=None):
        """The pipeline's runs, newest first (limit: at most that many)."""
        self.pipeline_context()
        options = mlmd.ListOptions(
            filter_query=(f"type = {quote(names.RUN_CONTEXT)} AND "
                          f"parent_contexts_a.name = {quote(self.pipeline_name)}"),
            # By id, not create time: contexts written in one transaction (a
            # copied store) share a timestamp, and ids grow with time anyway.
            order_by=mlmd.OrderByField.ID, is_asc=False,
            limit=limit or None)
        self._count()
        return self.store.get_contexts(list_options=options)

    def run_contents(self, run_context):
        """(executions, {type: [artifacts]}) of one run, via its context."""
        self._count(2)
        executions = self.store.get_executions_by_context(run_context.id)
        artifacts = self.store.get_artifacts_by_context(
            run_context.id, list_options=mlmd.ListOptions(
                filter_query=(f"type IN ({quote(names.EXAMPLES)}, {quote(names.MODEL_BLESSING)}, "
                              f"{quote(names.PUSHED_MODEL)})")))
        by_type = {}
        for artifact in artifacts:
            by_type.setdefault(artifact.type, []).append(artifact)
        return executions, by_type

    # ------------------------------------------------------------ artifacts

    def pushed_models(self, model_name, version=None, limit=None, as_int=False):
        """PushedModel artifacts of this pipeline that were pushed, newest first."""
        clauses = [f"type = {quote(names.PUSHED_MODEL)}", self._in_pipeline(),
                   f"custom_properties.{names.PUSHED}.int_value = 1",
                   f"custom_properties.{names.MODEL_NAME}.string_value = {quote(model_name)}"]
        if version is not None:
            # TFX's pusher records the version as a string; other writers as an int.
            pushed_version = f"custom_properties.{names.PUSHED_VERSION}"
            clauses.append(f"{pushed_version}.int_value = {int(version)}" if as_int else
                           f"{pushed_version}.string_value = {quote(str(version))}")
        options = mlmd.ListOptions(filter_query=' AND '.join(clauses),
                                   order_by=mlmd.OrderByField.ID, is_asc=False,
                                   limit=limit or None)
        self._count()
        return self.store.get_artifacts(list_options=options)

    def pushed_model(self, model_name, version):
        """The PushedModel of a version; the newest wins if a re-run pushed it twice."""
        self.pipeline_context()
        found = (self.pushed_models(model_name, version, limit=1)
                 or self.pushed_models(model_name, version, limit=1, as_int=True))
        if found:
            return found[0]
        known = sorted({int(v) for v in (
            value_of(a, names.PUSHED_VERSION) for a in self.pushed_models(model_name))
            if str(v).isdigit()})
        listed = ', '.join(map(str, known)) if known else 'none'
        raise NotFoundError(
            f'no pushed version {version} of model {model_name!r} in pipeline '
            f'{self.pipeline_name!r} ({self.store.description}); pushed versions: '
            f'{listed}')

    def artifact(self, artifact_id):
        self._count()
        found = self.store.get_artifacts_by_id([int(artifact_id)])
        if not found:
            raise NotFoundError(
                f'artifact {artifact_id} does not exist in {self.store.description}')
        return found[0]

    def artifact_in_pipeline(self, artifact_id):
        """True if the artifact is attributed to this pipeline's context."""
        self._count()
        return bool(self.store.get_artifacts(list_options=mlmd.ListOptions(
            filter_query=f"id = {int(artifact_id)} AND {self._in_pipeline()}")))

    # ------------------------------------------------------------ lineage

    def subgraph(self, start_ids, direction, hops, ending_artifacts=None,
                 ending_executions=None, include_ending=True, with_contexts=False):
        """get_lineage_subgraph from artifacts `start_ids` (chunked to MLMD's cap)."""
        merged = Subgraph()
        start_ids = sorted(set(int(i) for i in start_ids))
        for begin in range(0, len(start_ids), MAX_STARTING_NODES):
            chunk = start_ids[begin:begin + MAX_STARTING_NODES]
            options = Options(
                starting_artifacts=Options.StartingNodes(
                    filter_query='id IN (%s)' % ', '.join(map(str, chunk))),
                max_num_hops=hops, direction=direction)
            if ending_artifacts:
                options.ending_artifacts.filter_query = ending_artifacts
                options.ending_artifacts.include_ending_nodes = include_ending
            if ending_executions:
                options.ending_executions.filter_query = ending_executions
                options.ending_executions.include_ending_nodes = include_ending
            self._count()
            merged.add(self.store.get_lineage_subgraph(
                options, _GRAPH_MASK_WITH_CONTEXTS if with_contexts else _GRAPH_MASK))
        return merged

    def provenance(self, pushed_model_id, model_id):
        """Everything upstream of a pushed model (or of a model) in its own run.

        Walks up from the starting artifact and stops at any *other* Model
        (the baseline and the warm-start model are included as ending nodes
        but not expanded): without that stop, every retrain's lineage would
        reach back through all the models before it.
        """
        start = pushed_model_id if pushed_model_id is not None else model_id
        # Schema ends the walk too: every run's cached ImportSchemaGen records
        # another producer of the same Schema, so expanding it would pull in
        # one execution per run ever made (see first_producer for its maker).
        return self.subgraph(
            [start], Options.UPSTREAM, UPSTREAM_HOPS,
            ending_artifacts=(f"(type = {quote(names.MODEL)} AND id != {int(model_id)}) "
                              f"OR type = {quote(names.SCHEMA)}"),
            with_contexts=True)

    def first_producer(self, artifact_id):
        """The oldest execution with an OUTPUT event to the artifact (its maker)."""
        self._count()
        found = self.store.get_executions(list_options=mlmd.ListOptions(
            filter_query=f"events_0.artifact_id = {int(artifact_id)} AND events_0.type = OUTPUT",
            order_by=mlmd.OrderByField.ID, is_asc=True, limit=1))
        return found[0] if found else None

    def pusher_inputs(self, pushed_model_id):
        """Two hops up from a pushed model: its pusher and that pusher's inputs."""
        return self.subgraph([pushed_model_id], Options.UPSTREAM, 2)

    def data_checks(self, examples_id):
        """Statistics, anomalies and the validation gate downstream of examples."""
        keep = ' OR '.join(f"type LIKE {quote('%' + t)}" for t in DATA_CHECK_TYPES)
        return self.subgraph([examples_id], Options.DOWNSTREAM, DATA_CHECK_HOPS,
                             ending_executions=f'NOT ({keep})', include_ending=False,
                             with_contexts=True)

    def linked_rollout_executions(self, pushed_model_id):
        """Rollout transitions linked (INPUT event) to a pushed model."""
        graph = self.subgraph([pushed_model_id], Options.DOWNSTREAM, 1)
        return {e.id for e in graph.executions.values()
                if e.type == names.ROLLOUT_EXECUTION}

    def pushes_of_models(self, model_ids, pushed_only=True):
        """{model id: [PushedModel artifacts]} via each model's pushers.

        pushed_only: only pushes that staged the model (pushed=1).
        """
        if not model_ids:
            return {}
        graph = self.subgraph(model_ids, Options.DOWNSTREAM, 2,
                              ending_executions=f"NOT (type LIKE {quote('%Pusher')})",
                              include_ending=False)
        result = {}
        for model_id in model_ids:
            for pusher in graph.consumers(model_id):
                for pushed in graph.outputs(pusher.id, 'pushed_model'):
                    if not pushed_only or value_of(pushed, names.PUSHED) == 1:
                        result.setdefault(model_id, []).append(pushed)
        return result

    def evaluations_of_model(self, model_id):
        """The Evaluator runs of a model with all their inputs and outputs."""
        graph = self.subgraph([model_id], Options.DOWNSTREAM, 2,
                              ending_executions=f"NOT (type LIKE {quote('%Evaluator')})",
                              include_ending=False, with_contexts=True)
        outputs = [a.id for a in graph.artifacts.values() if a.id != model_id]
        if outputs:
            # Two hops up from its outputs: the Evaluator and all its inputs.
            graph.add_subgraph(self.subgraph(outputs, Options.UPSTREAM, 2,
                                             with_contexts=True))
        return graph

    # ------------------------------------------------------------ rollout

    def _rollout_context(self, model_name):
        key = ('rollout', model_name)
        if key not in self._contexts:
            self._count()
            self._contexts[key] = self.store.get_context_by_type_and_name(
                names.ROLLOUT_CONTEXT, names.rollout_context_name(model_name))
        return self._contexts[key]

    def _rollout_executions(self, model_name, clause=None, newest_first=False, limit=None):
        context = self._rollout_context(model_name)
        if context is None:
            return []
        query = f"type = {quote(names.ROLLOUT_EXECUTION)}" + (f" AND {clause}" if clause else '')
        self._count()
        return self.store.get_executions_by_context(
            context.id, list_options=mlmd.ListOptions(
                filter_query=query, order_by=mlmd.OrderByField.ID,
                is_asc=not newest_first, limit=limit))

    def rollout_events(self, model_name):
        """Every recorded rollout transition of a model, oldest first."""
        return audit.event_rows(self._rollout_executions(model_name))

    def last_rollout_event(self, model_name):
        """The newest recorded transition, or None.

        Newest by event time among the last few by id: a back-filled record
        (written after a failed audit) has a newer id than its time says.
        """
        rows = audit.event_rows(self._rollout_executions(model_name, newest_first=True, limit=5))
        return rows[-1] if rows else None

    def rollout_events_touching(self, model_name, version):
        """Transitions that left `version` stable or canary, and each one after
        those that moved it out (a promotion of another version, a rollback).

        Filter queries on the stable/canary properties keep this independent of
        the length of the rollout history.
        """
        found = {}
        for prop in (names.STABLE_VERSION, names.CANARY_VERSION):
            for execution in self._rollout_executions(
                    model_name, f"properties.{prop}.int_value = {int(version)}"):
                found[execution.id] = execution
        ids = sorted(found)
        if not ids:
            return []
        # The event that moved the version out follows the last event of each
        # stretch in which it served: among the events between the first and
        # the last match (usually none or a few), and the one after the last.
        others = []
        if len(ids) > 1:
            listed = ', '.join(map(str, ids))
            others = self._rollout_executions(
                model_name, f"id > {ids[0]} AND id < {ids[-1]} AND NOT (id IN ({listed}))")
        others += self._rollout_executions(model_name, f"id > {ids[-1]}", limit=1)
        previous_matched = False
        for execution in sorted([*found.values(), *others], key=lambda e: e.id):
            if execution.id not in found and previous_matched:
                found[execution.id] = execution
            previous_matched = execution.id in found
        return audit.event_rows(found.values())

    def rollout_executions_by_id(self, execution_ids):
        if not execution_ids:
            return []
        self._count()
        return audit.event_rows(self.store.get_executions_by_id(sorted(execution_ids)))
