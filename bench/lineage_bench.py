"""How fast `tfx-canary lineage` answers on a store with many pipeline runs.

Fills a SQLite ML Metadata store with synthetic runs that have the same
types, properties, contexts and events as real tfx-canary runs (CsvExampleGen
-> ... -> CanaryPusher, BaselineModel, rollout transitions), then times the
queries behind `lineage runs` and `lineage show` as the store grows. Artifact
URIs point nowhere, so this measures ML Metadata, not reading payload files.

    python bench/lineage_bench.py            # 100, 300 and 1000 runs
    python bench/lineage_bench.py --quick    # 20 and 100 runs, one repeat
    python bench/lineage_bench.py --runs 50 200 --keep /tmp/bench.sqlite
"""
import argparse
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ml_metadata.metadata_store import metadata_store  # noqa: E402
from ml_metadata.proto import metadata_store_pb2 as pb  # noqa: E402

PIPELINE = 'tfx-canary-taxi'
MODEL_NAME = 'taxi'
_S, _I = pb.STRING, pb.INT

# Types as TFX 1.16 and tfx-canary register them (name, properties, base type).
ARTIFACT_TYPES = {
    'Examples': ({'span': _I, 'version': _I, 'split_names': _S}, 1),
    'Schema': ({}, None),
    'ExampleStatistics': ({'span': _I, 'split_names': _S}, 4),
    'ExampleAnomalies': ({'span': _I, 'split_names': _S}, None),
    'TransformGraph': ({}, None),
    'TransformCache': ({}, None),
    'Model': ({}, 2),
    'ModelRun': ({}, None),
    'ModelBlessing': ({}, None),
    'ModelEvaluation': ({}, None),
    'PushedModel': ({}, 2),
}
EXECUTION_TYPES = {
    'CsvExampleGen': 'tfx.components.example_gen.csv_example_gen.component.CsvExampleGen',
    'ImportSchemaGen': 'tfx.components.schema_gen.import_schema_gen.component.ImportSchemaGen',
    'BaselineModel': 'components.baseline.component.BaselineModel',
    'StatisticsGen': 'tfx.components.statistics_gen.component.StatisticsGen',
    'ExampleValidator': 'tfx.components.example_validator.component.ExampleValidator',
    'ValidationGate': 'components.validation_gate.component.ValidationGate',
    'Transform': 'tfx.components.transform.component.Transform',
    'Trainer': 'tfx.components.trainer.component.Trainer',
    'Evaluator': 'components.baseline.component.BaselineAwareEvaluator',
    'CanaryPusher': 'components.canary_pusher.component.CanaryPusher',
}
ROLLOUT_TYPE = 'tfx_canary.RolloutTransition'
ROLLOUT_PROPERTIES = {'event': _S, 'model_name': _S, 'stable_version': _I,
                      'canary_version': _I, 'traffic_percent': _I, 'actor': _S, 'reason': _S}


def _set(node, custom=False, **values):
    props = node.custom_properties if custom else node.properties
    for key, value in values.items():
        if isinstance(value, bool):
            props[key].int_value = int(value)
        elif isinstance(value, int):
            props[key].int_value = value
        else:
            props[key].string_value = str(value)


class SyntheticPipeline:
    """Writes tfx-canary-shaped runs into a store, one MLMD call per execution."""

    def __init__(self, store, pipeline_name=PIPELINE, model_name=MODEL_NAME, seed=7):
        self.store = store
        self.pipeline_name = pipeline_name
        self.model_name = model_name
        self.random = random.Random(seed)
        self.runs = 0
        self.version = 0
        self.stable = None
        self.canary = None
        self.traffic = 0
        self.pushed = {}  # version -> PushedModel id
        self.last_state = {'stable': None, 'canary': None, 'traffic': 0}
        self.events = 0
        self.atypes = {}
        for name, (props, base) in ARTIFACT_TYPES.items():
            t = pb.ArtifactType(name=name)
            for key, kind in props.items():
                t.properties[key] = kind
            if base is not None:
                t.base_type = base
            self.atypes[name] = store.put_artifact_type(t, can_add_fields=True)
        self.etypes = {short: store.put_execution_type(pb.ExecutionType(name=full),
                                                       can_add_fields=True)
                       for short, full in EXECUTION_TYPES.items()}
        rollout_type = pb.ExecutionType(name=ROLLOUT_TYPE)
        for key, kind in ROLLOUT_PROPERTIES.items():
            rollout_type.properties[key] = kind
        self.rollout_type = store.put_execution_type(rollout_type, can_add_fields=True)
        ctypes = {name: store.put_context_type(pb.ContextType(name=name), can_add_fields=True)
                  for name in ('pipeline', 'pipeline_run', 'node')}
        rollout_ctype = pb.ContextType(name='tfx_canary.Rollout')
        rollout_ctype.properties['model_name'] = _S
        ctypes['tfx_canary.Rollout'] = store.put_context_type(rollout_ctype, can_add_fields=True)
        self.ctypes = ctypes
        self.pipeline_ctx = self._context('pipeline', pipeline_name)
        self.node_ctx = {short: self._context('node', f'{pipeline_name}.{short}')
                         for short in EXECUTION_TYPES}
        rollout_ctx = pb.Context(type_id=ctypes['tfx_canary.Rollout'],
                                 name=f'rollout.{model_name}')
        rollout_ctx.properties['model_name'].string_value = model_name
        [rollout_ctx.id] = store.put_contexts([rollout_ctx])
        self.rollout_ctx = rollout_ctx
        self.schema = None

    def _context(self, type_name, name):
        context = pb.Context(type_id=self.ctypes[type_name], name=name)
        [context.id] = self.store.put_contexts([context])
        return context

    def _artifact(self, type_name, uri, props=None, custom=None):
        artifact = pb.Artifact(type_id=self.atypes[type_name], uri=uri, state=pb.Artifact.LIVE)
        _set(artifact, **(props or {}))
        _set(artifact, custom=True, tfx_version='1.16.0', is_external=0, **(custom or {}))
        return artifact

    def _execute(self, node, run_ctx, inputs=(), outputs=(), state=pb.Execution.COMPLETE,
                 **custom):
        """One execution with its events and contexts, like TFX's publisher."""
        execution = pb.Execution(type_id=self.etypes[node], last_known_state=state)
        _set(execution, custom=True, **custom)
        pairs = []
        for role, artifact in inputs:
            pairs.append((artifact, pb.Event(type=pb.Event.INPUT, path=pb.Event.Path(
                steps=[pb.Event.Path.Step(key=role), pb.Event.Path.Step(index=0)]))))
        for role, artifact in outputs:
            pairs.append((artifact, pb.Event(type=pb.Event.OUTPUT, path=pb.Event.Path(
                steps=[pb.Event.Path.Step(key=role), pb.Event.Path.Step(index=0)]))))
        _, artifact_ids, _ = self.store.put_execution(
            execution, pairs, [self.pipeline_ctx, run_ctx, self.node_ctx[node]])
        for (artifact, _), new_id in zip(pairs, artifact_ids):
            artifact.id = new_id
        return {role: artifact for role, artifact in outputs}

    def _transition(self, event, version, pushed_id, reason):
        # The state before is the one the previous transition left.
        before = self.last_state
        execution = pb.Execution(type_id=self.rollout_type, last_known_state=pb.Execution.COMPLETE)
        _set(execution, event=event, model_name=self.model_name, actor='bench@host',
             reason=reason, traffic_percent=self.traffic)
        if self.stable is not None:
            execution.properties['stable_version'].int_value = self.stable
        if self.canary is not None:
            execution.properties['canary_version'].int_value = self.canary
        self.events += 1  # Monotonic event times: history order is by time.
        at = (datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
              + datetime.timedelta(minutes=self.events)).strftime('%Y-%m-%dT%H:%M:%S.000Z')
        record = {'id': f'bench-{self.events}', 'event': event, 'at': at,
                  'actor': 'bench@host', 'reason': reason, 'version': version, 'from': before,
                  'to': {'stable': self.stable, 'canary': self.canary, 'traffic': self.traffic}}
        _set(execution, custom=True, event_json=json.dumps(record, sort_keys=True),
             event_id=record['id'], at=at, metrics_json='{}')
        self.last_state = dict(record['to'])
        pushed = self.store.get_artifacts_by_id([pushed_id])[0]
        self.store.put_execution(execution, [(pushed, pb.Event(type=pb.Event.INPUT))],
                                 [self.rollout_ctx], reuse_context_if_already_exist=True)

    def rollback_to(self, version, reason='operator rollback'):
        """`tfx-canary rollout rollback --to VERSION`, recorded as the CLI does."""
        self.stable, self.canary, self.traffic = version, None, 0
        self._transition('rolled_back', version, self.pushed[version], reason)

    def add_run(self, span_range=None, blessed=None, pusher=True):
        """One full pipeline run; returns its pushed version or None.

        span_range: (A, B) to record a span-range ExampleGen's output instead
        of the run's own span. blessed: force the Evaluator's verdict (default:
        85% blessed). pusher=False: the run stops before CanaryPusher.
        """
        self.runs += 1
        n, root = self.runs, f'/bench/{self.pipeline_name}'
        example_props = {'span': n}
        if span_range:
            example_props = {'span': span_range[1], 'span_range': '%d-%d' % span_range}
        run_ctx = self._context('pipeline_run', f'2026-01-01T00:00:00.{n:06d}')
        self.store.put_parent_contexts([pb.ParentContext(child_id=run_ctx.id,
                                                         parent_id=self.pipeline_ctx.id)])
        fingerprint = (f'split:single_split,num_files:1,total_bytes:{630000 + n},'
                       f'xor_checksum:1,sum_checksum:1')
        examples = self._execute('CsvExampleGen', run_ctx, outputs=[('examples', self._artifact(
            'Examples', f'{root}/CsvExampleGen/examples/{n}', {'split_names': '["train", "eval"]'},
            {**example_props, 'input_fingerprint': fingerprint, 'file_format': 'tfrecords_gzip',
             'payload_format': 'FORMAT_TF_EXAMPLE'}))],
            span=n, input_base='/data', input_fingerprint=fingerprint,
            input_config='{"splits": [{"name": "single_split", "pattern": "span-%d/*.csv"}]}' % n
        )['examples']
        if self.schema is None:
            self.schema = self._execute('ImportSchemaGen', run_ctx, outputs=[(
                'schema', self._artifact('Schema', f'{root}/ImportSchemaGen/schema/1'))],
                schema_file='/data/schema.pbtxt')['schema']
        else:  # Later runs hit the cache: a CACHED execution re-outputs it.
            self._execute('ImportSchemaGen', run_ctx, outputs=[('schema', self.schema)],
                          state=pb.Execution.CACHED, schema_file='/data/schema.pbtxt')
        has_baseline = self.stable is not None
        baseline = self._execute('BaselineModel', run_ctx, outputs=[('model', self._artifact(
            'Model', f'{root}/BaselineModel/model/{n}', custom={
                'has_baseline': int(has_baseline), 'baseline_version': self.stable or 0,
                'baseline_source': 'rollout.json', 'model_name': self.model_name,
                'baseline_uri': f'/serving/{self.model_name}/{self.stable}' if has_baseline else '',
                'baseline_fingerprint': ''}))])['model']
        stats = self._execute('StatisticsGen', run_ctx, inputs=[('examples', examples)],
                              outputs=[('statistics', self._artifact(
                                  'ExampleStatistics', f'{root}/StatisticsGen/statistics/{n}',
                                  {'split_names': '["train", "eval"]'}))])['statistics']
        anomalies = self._execute('ExampleValidator', run_ctx,
                                  inputs=[('statistics', stats), ('schema', self.schema)],
                                  outputs=[('anomalies', self._artifact(
                                      'ExampleAnomalies', f'{root}/ExampleValidator/anomalies/{n}',
                                      {'split_names': '["train", "eval"]'}))])['anomalies']
        self._execute('ValidationGate', run_ctx, inputs=[('anomalies', anomalies)],
                      allowed_anomalies='')
        t = f'{root}/Transform'
        outputs = self._execute('Transform', run_ctx, inputs=[('examples', examples),
                                                              ('schema', self.schema)], outputs=[
            ('transform_graph', self._artifact('TransformGraph', f'{t}/transform_graph/{n}')),
            ('transformed_examples', self._artifact('Examples', f'{t}/transformed_examples/{n}',
                                                    {'split_names': '["train", "eval"]'})),
            ('pre_transform_schema', self._artifact('Schema', f'{t}/pre_transform_schema/{n}')),
            ('post_transform_schema', self._artifact('Schema', f'{t}/post_transform_schema/{n}')),
            ('pre_transform_stats', self._artifact('ExampleStatistics', f'{t}/pre_stats/{n}')),
            ('post_transform_stats', self._artifact('ExampleStatistics', f'{t}/post_stats/{n}')),
            ('post_transform_anomalies', self._artifact('ExampleAnomalies', f'{t}/post_an/{n}')),
            ('updated_analyzer_cache', self._artifact('TransformCache', f'{t}/cache/{n}')),
        ], preprocessing_fn='modules.preprocessing.preprocessing_fn', custom_config='null')
        trained = self._execute('Trainer', run_ctx, inputs=[
            ('examples', outputs['transformed_examples']),
            ('transform_graph', outputs['transform_graph']), ('schema', self.schema),
            ('base_model', baseline)], outputs=[
            ('model', self._artifact('Model', f'{root}/Trainer/model/{n}')),
            ('model_run', self._artifact('ModelRun', f'{root}/Trainer/model_run/{n}'))],
            run_fn='modules.model.run_fn', custom_config='{}',
            train_args='{"num_steps": 200}', eval_args='{"num_steps": 50}')
        draw = self.random.random()  # Drawn always, so forcing keeps the sequence.
        blessed = draw < 0.85 if blessed is None else blessed
        recorded = {'has_baseline': int(has_baseline), 'baseline_version': self.stable or 0}
        evaluated = self._execute('Evaluator', run_ctx, inputs=[
            ('model', trained['model']), ('baseline_model', baseline), ('examples', examples)],
            outputs=[('blessing', self._artifact('ModelBlessing', f'{root}/Evaluator/blessing/{n}',
                                                 custom={'blessed': int(blessed), **recorded})),
                     ('evaluation', self._artifact('ModelEvaluation',
                                                   f'{root}/Evaluator/evaluation/{n}',
                                                   custom=recorded))],
            eval_config='{}')
        self.last_model_id = trained['model'].id
        if not pusher:
            return None
        version = self.version + 1 if blessed else None
        custom = {'pushed': int(blessed), 'model_name': self.model_name}
        if blessed:
            self.version = version
            role = 'stable' if self.stable is None else 'canary'
            custom.update(pushed_version=str(version), rollout_role=role,
                          pushed_destination=f'/serving/{self.model_name}/{version}',
                          challenges_stable_version=self.stable or 0)
        pushed = self._execute('CanaryPusher', run_ctx, inputs=[
            ('model', trained['model']), ('model_evaluation', evaluated['evaluation']),
            ('model_blessing', evaluated['blessing'])], outputs=[(
                'pushed_model', self._artifact('PushedModel', f'{root}/CanaryPusher/{n}',
                                               custom=custom))],
            model_name=self.model_name)['pushed_model']
        if blessed:
            self.pushed[version] = pushed.id
            if self.stable is None:
                self.stable, self.traffic = version, 0
                self._transition('staged_stable', version, pushed.id, 'blessed by Evaluator')
            else:
                self.canary, self.traffic = version, 10
                self._transition('staged_canary', version, pushed.id, 'blessed by Evaluator')
                # Most canaries are ramped and promoted; some are rolled back.
                self.traffic = 50
                self._transition('traffic_changed', version, pushed.id, 'ramp')
                if self.random.random() < 0.8:
                    self.stable, self.canary, self.traffic = version, None, 0
                    self._transition('promoted', version, pushed.id, 'healthy')
                else:
                    self.canary, self.traffic = None, 0
                    self._transition('rolled_back', version, pushed.id, 'errors up')
        return version


def sqlite_config(path, create=True):
    """The shared builder (common/mlmd.py): create for writing, read-only for queries."""
    from common import mlmd
    return mlmd.sqlite_config(path, mlmd.CREATE if create else mlmd.READ_ONLY)


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def measure(path, synthetic, repeats=3):
    """Times the lineage queries on the store at `path`; returns a result row."""
    from lineage import build
    from lineage.connection import open_store
    from lineage.query import LineageQueries

    def fresh():
        return LineageQueries(open_store(sqlite_config(path, create=False)), PIPELINE)

    row = {'runs': synthetic.runs, 'versions': synthetic.version,
           'size_mb': os.path.getsize(path) / 1e6}
    queries = fresh()
    row['runs_20'], _ = _timed(lambda: build.runs(queries, MODEL_NAME, None, limit=20), repeats)
    row['runs_all'], _ = _timed(lambda: build.runs(queries, MODEL_NAME, None), repeats)

    def show(**target):
        q = fresh()
        record = build.show(q, MODEL_NAME, None, **target)
        return q.stats['queries'], record
    row['show_stable'], (row['queries'], record) = _timed(lambda: show(role='stable'), repeats)
    assert record['pushed_model']['version'] == synthetic.stable
    row['show_oldest'], _ = _timed(lambda: show(version=1), repeats)
    row['diff'], _ = _timed(lambda: build.diff(fresh(), MODEL_NAME, None, 1, 'stable'), repeats)
    return row


def run_bench(sizes, repeats, path):
    store = metadata_store.MetadataStore(sqlite_config(path))
    synthetic = SyntheticPipeline(store)
    rows = []
    fill = 0.0
    for size in sorted(sizes):
        started = time.perf_counter()
        while synthetic.runs < size:
            synthetic.add_run()
        fill += time.perf_counter() - started
        row = measure(path, synthetic, repeats)
        row['fill_s'] = fill
        rows.append(row)
    return rows


def format_table(rows):
    header = ('runs', 'versions', 'store MB', 'fill s', 'runs (20)', 'runs (all)',
              'show --stable', 'show --version 1', 'diff 1 stable', 'queries/show')
    lines = [header]
    ms = lambda s: '%.0f ms' % (s * 1000)  # noqa: E731
    for r in rows:
        lines.append((str(r['runs']), str(r['versions']), '%.1f' % r['size_mb'],
                      '%.1f' % r['fill_s'], ms(r['runs_20']), ms(r['runs_all']),
                      ms(r['show_stable']), ms(r['show_oldest']), ms(r['diff']),
                      str(r['queries'])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return '\n'.join('  '.join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, nargs='+', default=[100, 300, 1000],
                        help='store sizes (pipeline runs) to measure at')
    parser.add_argument('--quick', action='store_true', help='20 and 100 runs, one repeat')
    parser.add_argument('--repeats', type=int, default=3, help='timings per query (median)')
    parser.add_argument('--keep', metavar='FILE', help='build the store here and keep it')
    args = parser.parse_args(argv)
    sizes, repeats = ([20, 100], 1) if args.quick else (args.runs, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, 'bench.sqlite')
        if os.path.exists(path):
            parser.error(f'{path} exists: pass a new file to --keep')
        rows = run_bench(sizes, repeats, path)
    print(format_table(rows))
    print('median of %d; SQLite on %s; "show" = every MLMD query behind `lineage show` '
          '(payload files are absent here, so not read)' % (repeats, tempfile.gettempdir()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
