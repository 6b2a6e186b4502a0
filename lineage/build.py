"""Assembles lineage records (plain JSON-ready dicts) from the MLMD queries.

The records are the product: `--json` prints them as they are, the text
tree and the graph picture are drawn from them. Keys are stable across
releases within a `schema_version`; ids are the store's own (they differ
between two copies of the same history, everything else does not).
"""

import dataclasses
import datetime
import json
import os
import re

from common import capture_manifest, locations
from common import mlmd_names as names
from common import tfx_outputs
from common.mlmd import value_of, version_number
from common.storage import local_path
from lineage import files
from lineage.errors import LineageError, NotFoundError
from lineage.query import Execution, is_a, short_type, state_name
from rollout import state as rollout_state
from rollout.errors import RolloutError

SCHEMA_VERSION = 1
MODEL, PUSHED_MODEL = names.MODEL, names.PUSHED_MODEL


def iso_time(ms):
    """MLMD milliseconds since the epoch -> '2026-11-25T12:31:37.935Z' (UTC)."""
    if not ms:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)
    return moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def _json_value(text):
    if text in (None, ''):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _artifact_ref(artifact):
    if artifact is None:
        return None
    return {'id': artifact.id, 'type': artifact.type, 'uri': artifact.uri,
            'created_at': iso_time(artifact.create_time_since_epoch)}


def _execution_ref(graph, execution):
    if execution is None:
        return None
    started = execution.create_time_since_epoch
    finished = execution.last_update_time_since_epoch
    return {'execution_id': execution.id, 'type': short_type(execution.type),
            'state': state_name(execution), 'run': graph.run_of(execution.id),
            'started_at': iso_time(started), 'finished_at': iso_time(finished),
            'seconds': round((finished - started) / 1000.0, 1) if started and finished else None}


def _version_number(artifact):
    return version_number(value_of(artifact, names.PUSHED_VERSION)) if artifact is not None else None


# ---------------------------------------------------------------- serving

def _read_rollout_json(path, model_name):
    """(served state, None), or (None, warning) for a rollout.json that does not validate."""
    try:
        state = rollout_state.load_state(path, model_name)
    except (RolloutError, OSError) as exc:
        return None, f'cannot read {path} ({exc}); using ML Metadata instead'
    return {'stable': state.stable_version, 'canary': state.canary_version,
            'traffic_percent': state.canary_traffic_percent, 'phase': state.phase,
            'source': path, 'rollout_json': path}, None


def served_state(queries, serving_root, model_name):
    """What serves now: rollout.json (the source of truth), else MLMD.

    Without rollout.json (a store inspected away from the serving host) the
    last recorded rollout transition says what serves; without any, the
    newest pushes' `rollout_role` properties (the role they were staged
    with). Returns the state dict (with 'source', 'warnings', 'serving_root'
    and 'rollout_json': the file read, None when it was not) or None.
    """
    warnings = []
    state = None
    serving_root = os.path.abspath(serving_root) if serving_root else None
    path = locations.rollout_json_path(serving_root, model_name) if serving_root else None
    if path and os.path.isfile(path):
        state, warning = _read_rollout_json(path, model_name)
        if warning:
            warnings.append(warning)
    last = queries.last_rollout_event(model_name)
    if state is None and last is not None:
        to = last.get('to') or {}
        state = {'stable': to.get('stable'), 'canary': to.get('canary'),
                 'traffic_percent': to.get('traffic') or 0, 'phase': None,
                 'source': f'ML Metadata: last rollout event ({last.get("event")} at '
                           f'{last.get("at")})'}
    elif state is not None and last is not None:
        to = last.get('to') or {}
        if (to.get('stable'), to.get('canary')) != (state['stable'], state['canary']):
            warnings.append(
                f'{state["source"]} says stable {state["stable"]}, canary '
                f'{state["canary"]} but the last rollout event in ML Metadata says '
                f'stable {to.get("stable")}, canary {to.get("canary")}: run '
                f'`tfx-canary rollout repair`')
    if state is None:
        pushes = queries.pushed_models(model_name, limit=50)
        roles = {}
        for pushed in pushes:  # Newest first: the first of each role wins.
            role = value_of(pushed, names.ROLLOUT_ROLE)
            if role in ('stable', 'canary') and role not in roles:
                roles[role] = _version_number(pushed)
        if roles:
            state = {'stable': roles.get('stable'), 'canary': roles.get('canary'),
                     'traffic_percent': None, 'phase': None,
                     'source': 'PushedModel properties (role when staged; no rollout.json '
                               'or rollout events found)'}
    if state is not None:
        state['warnings'] = warnings
        state.setdefault('rollout_json', None)
        state['serving_root'] = serving_root
    return state


def serving_state_record(served, serving_root, model_name):
    """Which rollout.json a record's serving roles came from (JSON `serving_state`)."""
    serving_root = os.path.abspath(serving_root) if serving_root else None
    return {'serving_root': serving_root,
            'rollout_json': (served or {}).get('rollout_json'),
            'source': (served or {}).get('source')}


def role_of_version(served, version):
    if served is None or version is None:
        return None
    if version == served.get('stable'):
        return 'stable'
    if version == served.get('canary'):
        return 'canary'
    return 'not serving'


def _served_ref(served, version):
    role = role_of_version(served, version)
    if role is None:
        return None
    traffic = served.get('traffic_percent')
    share = None
    if traffic is not None and role != 'not serving':
        share = 100 - traffic if role == 'stable' and served.get('canary') else (
            traffic if role == 'canary' else 100)
    return {'version': version, 'role': role, 'traffic_percent': share,
            'stable_version': served.get('stable'), 'canary_version': served.get('canary'),
            'source': served.get('source'), 'rollout_json': served.get('rollout_json'),
            'serving_root': served.get('serving_root')}


# ---------------------------------------------------------------- targets

def resolve(queries, model_name, serving_root, version=None, role=None, artifact_id=None):
    """(PushedModel or None, Model id, served state) for one `show` target."""
    queries.pipeline_context()
    served = served_state(queries, serving_root, model_name)
    if role is not None:
        if served is None:
            raise NotFoundError(
                f'cannot tell which version of {model_name!r} is {role}: no '
                f'{locations.rollout_json_path(serving_root or ".", model_name)}, no rollout '
                f'events and no pushed models in {queries.store.description}; pass '
                f'--serving-root or --version')
        version = served.get(role)
        if version is None:
            other = (f'stable is v{served["stable"]}' if served.get('stable')
                     else 'nothing staged')
            raise NotFoundError(
                f'model {model_name!r} has no {role} version now ({other}, per '
                f'{served["source"]})')
    if version is not None:
        pushed = queries.pushed_model(model_name, version)
    else:
        artifact = queries.artifact(artifact_id)
        if not queries.artifact_in_pipeline(artifact.id):
            raise NotFoundError(
                f'artifact {artifact.id} ({artifact.type}) does not belong to pipeline '
                f'{queries.pipeline_name!r}: pass --pipeline-name')
        if artifact.type == PUSHED_MODEL:
            pushed = artifact
        elif artifact.type == MODEL:
            # Its newest push, blessed (pushed=1) or not (pushed=0).
            pushes = queries.pushes_of_models([artifact.id], pushed_only=False).get(
                artifact.id, [])
            pushed = max(pushes, key=lambda a: a.id) if pushes else None
            if pushed is None:
                return None, artifact.id, served
        else:
            raise NotFoundError(
                f'artifact {artifact.id} is of type {artifact.type}: pass the id of a '
                f'{PUSHED_MODEL} or a {MODEL} (see `tfx-canary lineage runs --json`)')
    pusher_graph = queries.pusher_inputs(pushed.id)
    pusher = pusher_graph.producer(pushed.id)
    models = pusher_graph.inputs(pusher.id, 'model') if pusher else []
    if not models:
        raise LineageError(
            f'{PUSHED_MODEL} {pushed.id} has no recorded producer with a model input in '
            f'{queries.store.description}: the store is incomplete')
    return pushed, models[0].id, served


# ---------------------------------------------------------------- show

def _module_fingerprint(trainer):
    """What TFX recorded about the training code's identity."""
    run_fn = value_of(trainer, 'run_fn')
    config = _json_value(value_of(trainer, 'custom_config'))
    recorded = config.get('module_fingerprint') if isinstance(config, dict) else None
    if recorded:
        # pipeline/configs.py: sha256 of the model package's sources, in custom_config.
        return {'recorded': True, 'sha256': recorded, 'module_file': None,
                'detail': f'run_fn {run_fn}; sha256 of the module package sources'}
    module_file = value_of(trainer, 'module_file')
    module_path = value_of(trainer, 'module_path')
    if module_path and '@' in module_path:
        # TFX packages a module_file into a wheel named after the source hash.
        wheel = module_path.split('@', 1)[1]
        match = re.search(r'\+([0-9a-f]{16,})-', os.path.basename(wheel))
        if match:
            return {'recorded': True, 'sha256': match.group(1), 'module_file': module_file,
                    'detail': f'user-code wheel {os.path.basename(wheel)}'}
    if module_file:
        return {'recorded': False, 'sha256': None, 'module_file': module_file,
                'detail': f'module_file {module_file} recorded, without a content hash'}
    return {'recorded': False, 'sha256': None, 'module_file': None,
            'detail': f'run_fn {run_fn} is an import path, not a module_file: TFX '
                      f'records no source hash for it'}


def _hyperparameters(custom_config, effective_hparams):
    """Effective hyperparameters: the recorded custom_config over the model defaults.

    TFX records only the overrides, so the defaults come from the model code
    itself: `effective_hparams(custom_config)` (the CLI passes
    modules/hparams.py's hparams_from); None without one, or when the model
    code refuses the recorded overrides (other model code trained it).
    """
    if effective_hparams is None:
        return None
    try:
        return effective_hparams(custom_config or {})
    except ValueError:
        return None


def baseline_ref(artifact, versions):
    """A baseline / warm-start model input, or None when it holds no model.

    Two layouts are understood: TFX's resolver hands over the earlier
    Trainer's Model itself (its version comes from that model's push), and
    tfx-canary's BaselineModel step hands over a copy of the stable version
    with `has_baseline` (0 = nothing served yet) and `baseline_version`.
    """
    if artifact is None or value_of(artifact, names.HAS_BASELINE) == 0:
        return None
    ref = _artifact_ref(artifact)
    ref.update({
        'version': value_of(artifact, names.BASELINE_VERSION) or versions.get(artifact.id),
        'source': value_of(artifact, names.BASELINE_SOURCE),
        'copied_from': value_of(artifact, names.BASELINE_URI) or None,
        # Identity of the SavedModel that served (the BaselineModel step's hash).
        'fingerprint': value_of(artifact, names.BASELINE_FINGERPRINT) or None,
    })
    return ref


def _trainer_record(graph, model_id, versions, effective_hparams):
    trainer = graph.producer(model_id, prefer_type='Trainer')
    if trainer is None:
        return None, {}
    ref = _execution_ref(graph, trainer)
    custom_config = _json_value(value_of(trainer, 'custom_config')) or {}
    if isinstance(custom_config, dict):
        # Shown as module_fingerprint below; custom_config lists the model overrides.
        custom_config = {k: v for k, v in custom_config.items() if k != 'module_fingerprint'}
    train_args = _json_value(value_of(trainer, 'train_args')) or {}
    eval_args = _json_value(value_of(trainer, 'eval_args')) or {}
    base = (graph.inputs(trainer.id, 'base_model') or [None])[0]
    model_run = (graph.outputs(trainer.id, 'model_run') or [None])[0]
    ref.update({
        'run_fn': value_of(trainer, 'run_fn'),
        'module_fingerprint': _module_fingerprint(trainer),
        'train_steps': train_args.get('num_steps') if isinstance(train_args, dict) else None,
        'eval_steps': eval_args.get('num_steps') if isinstance(eval_args, dict) else None,
        'custom_config': custom_config,
        'hyperparameters': _hyperparameters(custom_config, effective_hparams),
        'hyperparameters_note': 'custom_config over the current modules/hparams.py defaults',
        'base_model': baseline_ref(base, versions),
        'model_run': _artifact_ref(model_run),
    })
    inputs = {role: (graph.inputs(trainer.id, role) or [None])[0]
              for role in ('examples', 'transform_graph', 'schema')}
    return ref, inputs


def _transform_record(graph, transform_graph):
    if transform_graph is None:
        return None, None
    transform = graph.producer(transform_graph.id, prefer_type='Transform')
    ref = _execution_ref(graph, transform) or {}
    raw = (graph.inputs(transform.id, 'examples') or [None])[0] if transform else None
    ref.update({
        'transform_graph': _artifact_ref(transform_graph),
        'preprocessing_fn': value_of(transform, 'preprocessing_fn') if transform else None,
        'module_file': value_of(transform, 'module_file') if transform else None,
    })
    return ref, raw


def spans_of(span, span_range):
    """Every span an Examples artifact holds: A..B for a range, else [span]."""
    if span_range:
        try:
            start, end = (int(x) for x in str(span_range).split('-'))
            return list(range(start, end + 1))
        except ValueError:
            pass
    return [span] if span is not None else []


def span_label(examples):
    """'2', or '1-2' for a span range."""
    if not examples:
        return None
    return examples.get('span_range') or (
        str(examples['span']) if examples.get('span') is not None else None)


def _examples_record(graph, examples):
    if examples is None:
        return None
    gen = graph.producer(examples.id)
    input_config = _json_value(value_of(gen, 'input_config')) if gen else None
    patterns = [s.get('pattern') for s in (input_config or {}).get('splits', [])] \
        if isinstance(input_config, dict) else []
    record = _artifact_ref(examples)
    split_names = _json_value(value_of(examples, 'split_names'))
    span = value_of(examples, names.SPAN)
    span_range = value_of(examples, names.SPAN_RANGE)  # "A-B": a span-range ExampleGen.
    record.update({
        'span': span,
        'span_range': span_range,
        'spans': spans_of(span, span_range),
        'version': value_of(examples, 'version'),
        'input_fingerprint': value_of(examples, 'input_fingerprint'),
        'input_base': value_of(gen, 'input_base') if gen else None,
        'input_patterns': patterns,
        'split_names': split_names if isinstance(split_names, list) else None,
        'splits': None,
        'produced_by': _execution_ref(graph, gen),
    })
    return record


def _span_dirs(examples):
    """The local span folders an Examples record was read from (input base + pattern)."""
    base = local_path(examples.get('input_base'))
    if base is None:
        return []
    found = []
    for pattern in examples.get('input_patterns') or []:
        for span in examples.get('spans') or [None]:
            concrete = (pattern.replace('{SPAN}', str(span)) if span is not None
                        else pattern) if pattern else None
            if not concrete or '{' in concrete:
                continue
            folder = os.path.normpath(os.path.join(base, os.path.dirname(concrete)))
            if folder not in found:
                found.append(folder)
    return found


def _capture_record(examples):
    """Where the examples' rows came from when they are exported production capture.

    `tfx-canary capture export` leaves a manifest beside each span it writes
    (common/capture_manifest.py); None when no span of these examples has one
    (bundled or hand-made data, or input files that are not local).
    """
    if not examples:
        return None
    spans, served, rows = [], {}, {}
    for folder in _span_dirs(examples):
        manifest = capture_manifest.read(folder)
        if manifest is None:
            continue
        if 'error' in manifest:
            spans.append({'span_dir': folder, 'manifest': manifest['path'],
                          'error': manifest['error']})
            continue
        spans.append({
            'span_dir': folder,
            'manifest': manifest['path'],
            'span': manifest.get('span'),
            'capture_dir': manifest.get('capture_dir'),
            'capture_span': manifest.get('capture_span'),
            'exported_at': manifest.get('exported_at'),
            'time_range': manifest.get('time_range'),
            'served_by': manifest.get('served_by') or [],
            'rows': manifest.get('rows') or {},
            'labels': manifest.get('labels') or {},
            'label_column': manifest.get('label_column'),
            'capture_rate': manifest.get('capture_rate'),
            'capture_rates': manifest.get('capture_rates') or [],
        })
        for entry in manifest.get('served_by') or []:
            key = (entry.get('model'), entry.get('version'), entry.get('role'))
            served[key] = served.get(key, 0) + int(entry.get('rows') or 0)
        for key, value in (manifest.get('rows') or {}).items():
            rows[key] = rows.get(key, 0) + int(value or 0)
    if not spans:
        return None
    return {
        'source': capture_manifest.SOURCE,
        'spans': spans,
        # Every span together: which versions (and in which role) served the rows.
        'served_by': [{'model': m, 'version': v, 'role': r, 'rows': n}
                      for (m, v, r), n in sorted(served.items(), key=str)],
        'rows': rows,
    }


def _pick_in_run(candidates, graph, run):
    """The candidate execution of the given run, else the newest COMPLETE one."""
    in_run = [e for e in candidates if run and graph.run_of(e.id) == run]
    complete = [e for e in candidates if e.last_known_state == Execution.COMPLETE]
    pool = in_run or complete or candidates
    return max(pool, key=lambda e: e.id) if pool else None


def _data_check_records(queries, examples_id, run, warnings):
    """Statistics, anomalies and gate for the examples a model trained on."""
    graph = queries.data_checks(examples_id)
    stats_gen = _pick_in_run(graph.consumers(examples_id, 'StatisticsGen'), graph, run)
    statistics = (graph.outputs(stats_gen.id, 'statistics') or [None])[0] if stats_gen else None
    stats_record = anomalies_record = gate_record = None
    if statistics is not None:
        stats_record = _artifact_ref(statistics)
        stats_record['splits'] = files.split_sizes(statistics.uri)
        stats_record['produced_by'] = _execution_ref(graph, stats_gen)
        if stats_record['splits'] is None:
            warnings.append(f'statistics files not found under {statistics.uri}')
        validator = _pick_in_run(graph.consumers(statistics.id, 'ExampleValidator'), graph, run)
        anomalies = (graph.outputs(validator.id, 'anomalies') or [None])[0] if validator else None
        if anomalies is not None:
            by_split = files.anomalies(anomalies.uri)
            anomalies_record = _artifact_ref(anomalies)
            anomalies_record.update({
                'by_split': by_split,
                'count': (sum(len(rows) for rows in by_split.values())
                          if by_split is not None else None),
                'produced_by': _execution_ref(graph, validator)})
            if by_split is None:
                warnings.append(f'anomalies files not found under {anomalies.uri}')
            gate = _pick_in_run(graph.consumers(anomalies.id, 'ValidationGate'), graph, run)
            if gate is not None:
                gate_record = _execution_ref(graph, gate)
                allowed = value_of(gate, 'allowed_anomalies')
                gate_record['allowed_anomalies'] = [a for a in (allowed or '').split(',') if a]
                gate_record['passed'] = gate.last_known_state in (
                    Execution.COMPLETE, Execution.CACHED)
    drift_record = (_drift_record(graph, statistics, run, warnings)
                    if statistics is not None else None)
    return stats_record, anomalies_record, gate_record, drift_record


def _drift_record(graph, statistics, run, warnings):
    """The DriftGate's verdict on these statistics: what it compared with, each distance."""
    gate = _pick_in_run(graph.consumers(statistics.id, 'DriftGate'), graph, run)
    if gate is None:
        return None
    record = _execution_ref(graph, gate)
    record['passed'] = gate.last_known_state in (Execution.COMPLETE, Execution.CACHED)
    allowed = value_of(gate, 'allowed_drift')
    record['allowed_drift'] = [a for a in (allowed or '').split(',') if a]
    output = (graph.outputs(gate.id, 'drift') or [None])[0]
    if output is None:
        return record
    record['checked'] = value_of(output, names.DRIFT_CHECKED) == 1
    for key, name in (('span', names.DRIFT_SPAN), ('baseline', names.DRIFT_BASELINE),
                      ('note', names.DRIFT_NOTE)):
        record[key] = value_of(output, name)
    record['features'] = None
    if record['checked']:
        by_split = tfx_outputs.anomalies_by_split(output.uri)
        if not by_split:
            warnings.append(f'drift distances not found under {output.uri}')
        else:
            record['features'] = [
                {**dataclasses.asdict(m), 'split': split}
                for split, anomalies in sorted(by_split.items())
                for m in tfx_outputs.drift_measurements(anomalies)]
    return record


def _schema_record(queries, graph, schema):
    if schema is None:
        return None
    # The walk stops at the schema (see LineageQueries.provenance): ask for its maker.
    gen = graph.producer(schema.id) or queries.first_producer(schema.id)
    parsed = files.schema(schema.uri)
    record = _artifact_ref(schema)
    record.update({
        'source_file': value_of(gen, 'schema_file') if gen else None,
        'features': len(parsed['features']) if parsed else None,
        'produced_by': _execution_ref(graph, gen),
    })
    return record


def _evaluation_record(graph, pusher, model_id, versions, warnings):
    blessing = (graph.inputs(pusher.id, 'model_blessing') or [None])[0] if pusher else None
    evaluation = (graph.inputs(pusher.id, 'model_evaluation') or [None])[0] if pusher else None
    evaluator = None
    for artifact in (blessing, evaluation):
        if artifact is not None and evaluator is None:
            evaluator = graph.producer(artifact.id, prefer_type='Evaluator')
    if evaluator is None:
        # A model inspected by --artifact-id without a push: find its evaluator.
        evaluator = next(iter(graph.consumers(model_id, 'Evaluator')), None)
        if evaluator is None:
            return None
        blessing = (graph.outputs(evaluator.id, 'blessing') or [None])[0]
        evaluation = (graph.outputs(evaluator.id, 'evaluation') or [None])[0]
    record = _execution_ref(graph, evaluator)
    baseline = baseline_ref((graph.inputs(evaluator.id, 'baseline_model') or [None])[0],
                            versions)
    if blessing is not None and value_of(blessing, names.HAS_BASELINE) == 0:
        baseline = None  # The evaluator recorded that it compared against nothing.
    config_json = (files.evaluated_config(evaluation.uri) if evaluation is not None else None) \
        or value_of(evaluator, 'eval_config')
    slices = files.metrics(evaluation.uri) if evaluation is not None else None
    if evaluation is not None and slices is None:
        warnings.append(f'evaluation files not found under {evaluation.uri}')
    blessed = value_of(blessing, names.BLESSED) if blessing is not None else None
    record.update({
        'evaluation': _artifact_ref(evaluation),
        'blessing': _artifact_ref(blessing),
        'blessed': None if blessed is None else bool(blessed),
        'baseline': baseline,
        'thresholds': files.thresholds(config_json) if config_json else [],
        'validation': files.validation(evaluation.uri) if evaluation is not None else None,
        'overall': slices[0] if slices and not slices[0]['key'] else None,
        'slices': [s for s in slices if s['key']] if slices else [],
    })
    return record


def _pushed_record(graph, pushed):
    if pushed is None:
        return None
    pusher = graph.producer(pushed.id)
    record = _artifact_ref(pushed)
    record.update({
        'pushed': value_of(pushed, names.PUSHED) == 1,
        'version': _version_number(pushed),
        'destination': value_of(pushed, names.PUSHED_DESTINATION),
        'role_at_push': value_of(pushed, names.ROLLOUT_ROLE),
        'challenged_stable_version': value_of(pushed, names.CHALLENGES_STABLE_VERSION) or None,
        'serving_root': value_of(pushed, names.SERVING_ROOT),
        'produced_by': _execution_ref(graph, pusher),
    })
    return record, pusher


def _touches(event, version):
    if event.get('version') == version:
        return True
    for side in ('from', 'to'):
        snap = event.get(side) or {}
        if version in (snap.get('stable'), snap.get('canary')):
            return True
    return False


def _rollout_records(queries, model_name, pushed, version):
    """Transitions linked to the pushed model, plus any that moved its version."""
    if pushed is None:
        return []
    linked = queries.linked_rollout_executions(pushed.id)
    events = {e['execution_id']: e for e in queries.rollout_executions_by_id(linked)}
    if version is not None:
        for event in queries.rollout_events_touching(model_name, version):
            events.setdefault(event['execution_id'], event)
    rows = []
    for event in sorted(events.values(), key=lambda r: (r.get('at') or '', r['execution_id'])):
        is_linked = event['execution_id'] in linked
        if not is_linked and not _touches(event, version):
            continue
        rows.append({
            'at': event.get('at'), 'event': event.get('event'),
            'version': event.get('version'), 'actor': event.get('actor'),
            'reason': event.get('reason'), 'from': event.get('from'),
            'to': event.get('to'), 'linked': is_linked,
            'execution_id': event['execution_id'],
        })
    return rows


def _other_model_versions(queries, graph, model_id):
    """{model id: staged version} of the warm-start and baseline models in the graph.

    Only resolver-style inputs need a lookup: a BaselineModel copy names its version.
    """
    trainer = graph.producer(model_id, prefer_type='Trainer')
    inputs = graph.inputs(trainer.id, 'base_model') if trainer is not None else []
    for evaluator in graph.executions.values():
        if is_a(evaluator, 'Evaluator'):
            inputs += graph.inputs(evaluator.id, 'baseline_model')
    others = sorted({a.id for a in inputs if a.id != model_id
                     and value_of(a, names.BASELINE_VERSION) is None})
    return {mid: max((_version_number(p) for p in pushes if _version_number(p)), default=None)
            for mid, pushes in queries.pushes_of_models(others).items()}


def show(queries, model_name, serving_root, version=None, role=None, artifact_id=None,
         effective_hparams=None):
    """The full lineage record of one model version (see docs/lineage.md).

    `effective_hparams(custom_config)`: the model code's merge of the recorded
    overrides over its defaults (for `trainer.hyperparameters`).
    """
    pushed, model_id, served = resolve(queries, model_name, serving_root, version=version,
                                       role=role, artifact_id=artifact_id)
    warnings = list((served or {}).get('warnings', []))
    graph = queries.provenance(pushed.id if pushed else None, model_id)
    if pushed is None:
        # Never reached a pusher: its evaluation is downstream of the model.
        graph.add_subgraph(queries.evaluations_of_model(model_id))
    model = graph.artifacts.get(model_id) or queries.artifact(model_id)

    pushed_record, pusher = _pushed_record(graph, pushed) if pushed else (None, None)
    this_version = pushed_record['version'] if pushed_record else None

    versions = _other_model_versions(queries, graph, model_id)
    trainer_record, trainer_inputs = _trainer_record(graph, model_id, versions,
                                                     effective_hparams)
    transform_record, raw_examples = _transform_record(graph, trainer_inputs.get('transform_graph'))
    if transform_record is not None:
        transform_record['transformed_examples'] = _artifact_ref(trainer_inputs.get('examples'))
    examples_record = _examples_record(graph, raw_examples)
    run = trainer_record['run'] if trainer_record else None
    stats = anomalies = gate = drift = None
    if raw_examples is not None:
        stats, anomalies, gate, drift = _data_check_records(queries, raw_examples.id, run,
                                                            warnings)
        if stats and examples_record is not None:
            examples_record['splits'] = stats.get('splits')
    evaluation = _evaluation_record(graph, pusher, model_id, versions, warnings)
    return {
        'schema_version': SCHEMA_VERSION,
        'kind': 'lineage.show',
        'pipeline': queries.pipeline_name,
        'model_name': model_name,
        'store': queries.store.description,
        'served': _served_ref(served, this_version),
        'pushed_model': pushed_record,
        'model': _artifact_ref(model),
        'trainer': trainer_record,
        'transform': transform_record,
        'examples': examples_record,
        # Production capture behind the examples (None: not exported capture).
        'capture': _capture_record(examples_record),
        'statistics': stats,
        'schema': _schema_record(queries, graph, trainer_inputs.get('schema')),
        'anomalies': anomalies,
        'validation_gate': gate,
        'drift': drift,
        'evaluation': evaluation,
        'rollout_events': _rollout_records(queries, model_name, pushed, this_version),
        'warnings': warnings,
    }


# ---------------------------------------------------------------- runs

def _run_status(executions):
    states = {}
    for execution in executions:
        if short_type(execution.type) == 'RolloutTransition':
            continue
        states.setdefault(state_name(execution), []).append(short_type(execution.type))
    if 'FAILED' in states:
        return 'failed at ' + ', '.join(sorted(states['FAILED']))
    if 'CANCELED' in states:
        return 'canceled'
    if 'RUNNING' in states or 'NEW' in states:
        return 'running'
    cached = len(states.get('CACHED', []))
    return 'complete' + (f' ({cached} cached)' if cached else '') if states else 'empty'


def runs(queries, model_name, serving_root, limit=None):
    """The pipeline's runs, newest first, with what each consumed and produced."""
    contexts = queries.run_contexts(limit=limit)
    served = served_state(queries, serving_root, model_name)
    rows = []
    for context in contexts:
        executions, by_type = queries.run_contents(context)
        spans = sorted({s for a in by_type.get('Examples', [])
                        for s in spans_of(value_of(a, names.SPAN), value_of(a, names.SPAN_RANGE))})
        blessings = by_type.get('ModelBlessing', [])
        blessed = None
        if blessings:
            blessed = any(value_of(b, names.BLESSED) == 1 for b in blessings)
        pushes = [p for p in by_type.get(PUSHED_MODEL, [])
                  if value_of(p, names.MODEL_NAME) in (None, model_name)]
        pushed = [p for p in pushes if value_of(p, names.PUSHED) == 1]
        version = max((_version_number(p) for p in pushed), default=None)
        times = [t for e in executions for t in (e.create_time_since_epoch,
                                                 e.last_update_time_since_epoch) if t]
        started = context.create_time_since_epoch
        finished = max(times) if times else None
        rows.append({
            'run': context.name,
            'context_id': context.id,
            'started_at': iso_time(started),
            'seconds': round((finished - started) / 1000.0, 1) if finished and started else None,
            'status': _run_status(executions),
            'executions': len(executions),
            'spans': spans,
            'blessed': blessed,
            'pushed_version': version,
            # Also for a rejected model (pushed=0): `show --artifact-id` explains why.
            'pushed_model_id': max((p.id for p in pushes), default=None),
            'serving_now': role_of_version(served, version) if version is not None else None,
        })
    return {'schema_version': SCHEMA_VERSION, 'kind': 'lineage.runs',
            'pipeline': queries.pipeline_name, 'model_name': model_name,
            'store': queries.store.description, 'runs': rows,
            'serving_state': serving_state_record(served, serving_root, model_name),
            'limit': limit or None}


# ---------------------------------------------------------------- diff

def _pair(a, b):
    return {'a': a, 'b': b, 'changed': a != b}


def _schema_diff(a, b):
    if a is None or b is None:
        return None
    result = {'a_id': a['id'], 'b_id': b['id'], 'same_artifact': a['id'] == b['id'],
              'added': [], 'removed': [], 'changed': []}
    if result['same_artifact']:
        return result
    parsed_a, parsed_b = files.schema(a['uri']), files.schema(b['uri'])
    if parsed_a is None or parsed_b is None:
        result['unreadable'] = True
        return result
    fa, fb = parsed_a['features'], parsed_b['features']
    result['added'] = sorted(set(fb) - set(fa))
    result['removed'] = sorted(set(fa) - set(fb))
    for name in sorted(set(fa) & set(fb)):
        if fa[name]['text'] != fb[name]['text']:
            result['changed'].append(
                {'feature': name, 'a': fa[name]['text'], 'b': fb[name]['text']})
    return result


def _metric_table(a_slices, b_slices):
    """[{'slice', 'metrics': {name: {'a', 'b', 'delta'}}}] for the union of slices."""
    a_map = {s['slice']: s for s in a_slices}
    b_map = {s['slice']: s for s in b_slices}
    ordered = [s['slice'] for s in a_slices] + [s['slice'] for s in b_slices
                                                if s['slice'] not in a_map]
    rows = []
    for name in ordered:
        ma = a_map.get(name, {}).get('candidate', {})
        mb = b_map.get(name, {}).get('candidate', {})
        metrics = {}
        for metric in sorted(set(ma) | set(mb)):
            va, vb = ma.get(metric), mb.get(metric)
            metrics[metric] = {'a': va, 'b': vb,
                               'delta': (vb - va) if va is not None and vb is not None else None}
        rows.append({'slice': name, 'metrics': metrics})
    return rows


def _all_slices(record):
    evaluation = record.get('evaluation') or {}
    overall = evaluation.get('overall')
    return ([overall] if overall else []) + list(evaluation.get('slices') or [])


def _head_to_head(a, b, label_a, label_b):
    """Both models on the same data, when one was the other's baseline."""
    for newer, older, new_label, old_label, swap in ((b, a, label_b, label_a, False),
                                                     (a, b, label_a, label_b, True)):
        evaluation = newer.get('evaluation') or {}
        baseline = evaluation.get('baseline') or {}
        older_version = (older.get('pushed_model') or {}).get('version')
        same = baseline and (baseline.get('id') == (older.get('model') or {}).get('id') or (
            baseline.get('version') is not None and baseline.get('version') == older_version))
        if not same:
            continue
        rows = []
        for s in _all_slices(newer):
            metrics = {}
            for metric in sorted(set(s['candidate']) | set(s['baseline'])):
                old, new = s['baseline'].get(metric), s['candidate'].get(metric)
                va, vb = (new, old) if swap else (old, new)
                metrics[metric] = {'a': va, 'b': vb,
                                   'delta': (vb - va) if va is not None and vb is not None
                                   else None}
            rows.append({'slice': s['slice'], 'metrics': metrics})
        return {'evaluated_in': new_label, 'baseline': old_label,
                'span': span_label(newer.get('examples')), 'slices': rows}
    return None


def _summary(record, label):
    pushed = record.get('pushed_model') or {}
    trainer = record.get('trainer') or {}
    examples = record.get('examples') or {}
    evaluation = record.get('evaluation') or {}
    return {
        'label': label,
        'version': pushed.get('version'),
        'pushed_model_id': pushed.get('id'),
        'model_id': (record.get('model') or {}).get('id'),
        'run': trainer.get('run'),
        'served': record.get('served'),
        'span': span_label(examples),
        'blessed': evaluation.get('blessed'),
        'baseline_version': (evaluation.get('baseline') or {}).get('version'),
    }


def diff(queries, model_name, serving_root, a, b, effective_hparams=None):
    """Two versions side by side. `a`/`b`: version numbers or 'stable'/'canary'."""
    records = []
    for which in (a, b):
        target = {'role': which} if which in ('stable', 'canary') else {'version': which}
        records.append(show(queries, model_name, serving_root,
                            effective_hparams=effective_hparams, **target))
    ra, rb = records
    label_a = 'v%s' % (ra['pushed_model'] or {}).get('version')
    label_b = 'v%s' % (rb['pushed_model'] or {}).get('version')
    ea, eb = ra.get('examples') or {}, rb.get('examples') or {}
    ta, tb = ra.get('trainer') or {}, rb.get('trainer') or {}
    xa, xb = ra.get('transform') or {}, rb.get('transform') or {}
    va, vb = ra.get('evaluation') or {}, rb.get('evaluation') or {}
    ha, hb = ta.get('hyperparameters') or {}, tb.get('hyperparameters') or {}
    ca, cb = ta.get('custom_config') or {}, tb.get('custom_config') or {}
    return {
        'schema_version': SCHEMA_VERSION,
        'kind': 'lineage.diff',
        'pipeline': queries.pipeline_name,
        'model_name': model_name,
        'store': queries.store.description,
        'a': _summary(ra, label_a),
        'b': _summary(rb, label_b),
        'serving_state': serving_state_record(ra.get('served') or rb.get('served'),
                                              serving_root, model_name),
        'data': {
            'span': _pair(span_label(ea), span_label(eb)),
            'spans': _pair(ea.get('spans'), eb.get('spans')),
            'examples_id': _pair(ea.get('id'), eb.get('id')),
            'input_fingerprint': _pair(ea.get('input_fingerprint'), eb.get('input_fingerprint')),
            'splits': _pair(ea.get('splits'), eb.get('splits')),
            'anomalies': _pair((ra.get('anomalies') or {}).get('count'),
                               (rb.get('anomalies') or {}).get('count')),
        },
        'schema': _schema_diff(ra.get('schema'), rb.get('schema')),
        'training': {
            'run_fn': _pair(ta.get('run_fn'), tb.get('run_fn')),
            'module_fingerprint': _pair((ta.get('module_fingerprint') or {}).get('sha256'),
                                        (tb.get('module_fingerprint') or {}).get('sha256')),
            'preprocessing_fn': _pair(xa.get('preprocessing_fn'), xb.get('preprocessing_fn')),
            'train_steps': _pair(ta.get('train_steps'), tb.get('train_steps')),
            'eval_steps': _pair(ta.get('eval_steps'), tb.get('eval_steps')),
            'base_model_version': _pair((ta.get('base_model') or {}).get('version'),
                                        (tb.get('base_model') or {}).get('version')),
            'custom_config': [{'name': k, 'a': ca.get(k), 'b': cb.get(k)}
                              for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)],
            'hyperparameters': [{'name': k, 'a': ha.get(k), 'b': hb.get(k),
                                 'changed': ha.get(k) != hb.get(k)}
                                for k in sorted(set(ha) | set(hb))],
        },
        'evaluation': {
            'blessed': _pair(va.get('blessed'), vb.get('blessed')),
            'baseline_version': _pair((va.get('baseline') or {}).get('version'),
                                      (vb.get('baseline') or {}).get('version')),
            'note': 'each model on the eval split of its own run',
            'slices': _metric_table(_all_slices(ra), _all_slices(rb)),
            'head_to_head': _head_to_head(ra, rb, label_a, label_b),
        },
        'warnings': ra.get('warnings', []) + [w for w in rb.get('warnings', [])
                                               if w not in ra.get('warnings', [])],
    }
