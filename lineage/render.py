"""Text rendering of lineage records: the `show` tree, `runs` and `diff` tables.

Only formatting lives here; every fact comes from the record built by
lineage/build.py, so the text and `--json` never disagree.
"""

import json
import sys

from common import locations
from common import mlmd_names as names

METRIC_ORDER = ('auc', 'binary_accuracy', 'example_count', 'loss')


def _can_encode(text, stream=None):
    encoding = getattr(stream or sys.stdout, 'encoding', None) or 'ascii'
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


class _Glyphs:
    def __init__(self, unicode_ok):
        if unicode_ok:
            self.branch, self.last, self.pipe, self.blank = '├── ', '└── ', '│   ', '    '
            self.delta, self.arrow = 'Δ', '→'
        else:
            self.branch, self.last, self.pipe, self.blank = '|-- ', '`-- ', '|   ', '    '
            self.delta, self.arrow = 'd', '->'


def _glyphs(unicode_ok=None):
    return _Glyphs(_can_encode('├└│Δ→') if unicode_ok is None else unicode_ok)


def when(iso):
    """'2026-11-25T12:31:37.935Z' -> '2026-11-25 12:31:37 UTC'."""
    if not iso:
        return 'unknown time'
    return iso[:19].replace('T', ' ') + ' UTC'


def metric_value(name, value):
    if value is None:
        return 'n/a'
    if name == 'example_count':
        return '%d' % round(value)
    return '%.4f' % value


def metric_delta(name, value):
    if value is None:
        return ''
    if abs(value) < 0.00005:
        value = 0.0  # Float noise (e.g. -1e-16) would print as -0.0000.
    if name == 'example_count':
        return '%+d' % round(value)
    return '%+.4f' % value


def _ordered(names):
    names = set(names)
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


class _Node:
    def __init__(self, title, details=(), children=()):
        self.title = title
        self.details = list(details)
        self.children = list(children)


def _render_tree(node, glyphs, prefix='', is_last=True, is_root=True, out=None):
    out = [] if out is None else out
    if is_root:
        out.append(node.title)
        child_prefix = ''
    else:
        out.append(prefix + (glyphs.last if is_last else glyphs.branch) + node.title)
        child_prefix = prefix + (glyphs.blank if is_last else glyphs.pipe)
    detail_prefix = child_prefix + (glyphs.pipe if node.children else glyphs.blank)
    for line in node.details:
        out.append((detail_prefix + line).rstrip())
    for i, child in enumerate(node.children):
        _render_tree(child, glyphs, child_prefix, i == len(node.children) - 1, False, out)
    return out


def _kv(label, value, width=17):
    return f'{label:<{width}}{value}'


def _ref(artifact):
    return f'{artifact["type"]} #{artifact["id"]}'


def _version_label(ref):
    version = (ref or {}).get('version')
    return f' (v{version})' if version is not None else ' (never pushed)'


def _baseline_text(ref):
    text = f'{_ref(ref)}{_version_label(ref)}'
    if ref.get('copied_from'):
        text += f', a copy of {ref["copied_from"]}'
    return text


def _hparams_text(hparams):
    return ' '.join(f'{k}={json.dumps(v)}' for k, v in sorted(hparams.items()))


def _served_headline(record):
    pushed = record.get('pushed_model') or {}
    served = record.get('served')
    name = record['model_name']
    if not pushed:
        return f'{name}: {_ref(record["model"])} (never pushed)'
    version = pushed.get('version')
    if not pushed.get('pushed'):
        return f'{name}: {_ref(record["model"])}, not pushed (not blessed)'
    if served is None:
        return f'{name} v{version}: serving state unknown'
    role = served['role']
    if role == 'not serving':
        text = f'{name} v{version}: not serving now'
        parts = []
        if served.get('stable_version') is not None:
            parts.append(f'stable v{served["stable_version"]}')
        if served.get('canary_version') is not None:
            parts.append(f'canary v{served["canary_version"]}')
        return text + (f' ({", ".join(parts)})' if parts else '')
    text = f'{name} v{version}: {role}'
    if served.get('traffic_percent') is not None:
        text += f', {served["traffic_percent"]}% of traffic'
    other = 'canary_version' if role == 'stable' else 'stable_version'
    if served.get(other) is not None:
        text += f' ({other.split("_")[0]} v{served[other]})'
    return text


def _threshold_text(row):
    if row['kind'] == 'value':
        parts = []
        if 'lower_bound' in row:
            parts.append(f'>= {row["lower_bound"]:.4g}')
        if 'upper_bound' in row:
            parts.append(f'<= {row["upper_bound"]:.4g}')
        text = f'{row["metric"]} {" and ".join(parts)}'
    else:
        bounds = []
        higher = row.get('direction') == 'higher_is_better'
        if 'absolute' in row:
            bounds.append(f'{"change" if higher else "change"} {">=" if higher else "<="} '
                          f'{row["absolute"]:+.4g}')
        if 'relative' in row:
            bounds.append(f'relative change {">=" if higher else "<="} {row["relative"]:+.4g}')
        text = f'{row["metric"]} {" and ".join(bounds)} vs baseline'
    return f'{text} [{row["slices"]}]'


def _metrics_block(evaluation, glyphs, show_slices):
    lines = []
    overall = evaluation.get('overall')
    if overall is None:
        lines.append(_kv('metrics', 'not readable (evaluation files missing)'))
        return lines
    has_baseline = bool(overall.get('baseline'))
    header = f'{"overall":<17}{"candidate":>10}'
    if has_baseline:
        header += f'{"baseline":>10}{glyphs.delta:>10}'
    lines.append(header)
    for name in _ordered(overall['candidate']):
        row = f'  {name:<15}{metric_value(name, overall["candidate"].get(name)):>10}'
        if has_baseline:
            row += (f'{metric_value(name, overall["baseline"].get(name)):>10}'
                    f'{metric_delta(name, overall["diff"].get(name)):>10}')
        lines.append(row)
    slices = evaluation.get('slices') or []
    if not slices:
        return lines
    if not show_slices:
        lines.append(f'per slice        {len(slices)} slices (omitted; drop --no-slices)')
        return lines
    width = max(len(s['slice']) for s in slices) + 2
    metrics = [m for m in _ordered(overall['candidate']) if m not in ('example_count', 'loss')]
    head = f'{"per slice":<{width + 2}}{"examples":>8}'
    for m in metrics:
        head += f'  {m:>{max(len(m), 8)}}'
        if has_baseline:
            head += f' {glyphs.delta + " base":>8}'
    lines.append(head)
    for s in slices:
        count = metric_value('example_count', s['candidate'].get('example_count'))
        row = f'  {s["slice"]:<{width}}{count:>8}'
        for m in metrics:
            row += f'  {metric_value(m, s["candidate"].get(m)):>{max(len(m), 8)}}'
            if has_baseline:
                row += f' {metric_delta(m, s["diff"].get(m)):>8}'
        lines.append(row)
    return lines


def _event_line(event, glyphs):
    to = event.get('to') or {}
    state = []
    if to.get('stable') is not None:
        traffic = to.get('traffic') or 0
        share = 100 - traffic if to.get('canary') is not None else 100
        state.append(f'stable v{to["stable"]} {share}%')
    if to.get('canary') is not None:
        state.append(f'canary v{to["canary"]} {to.get("traffic") or 0}%')
    version = f'v{event["version"]}' if event.get('version') is not None else ''
    who = event.get('actor') or 'unknown'
    why = f': {event["reason"]}' if event.get('reason') else ''
    link = '' if event.get('linked') else '  (other version)'
    return (f'{when(event.get("at"))}  {event.get("event") or "?":<16}{version:<5}'
            f'{glyphs.arrow} {", ".join(state) or "nothing served"}   {who}{why}{link}')


def serving_state_line(state, model_name):
    """`serving state: <the rollout.json read>`, or where the roles came from instead.

    `state`: a record's `served` or `serving_state` dict (source, rollout_json,
    serving_root, and serving_root_from when the CLI chose the root).
    """
    if not state or not state.get('source'):
        return None
    if state.get('rollout_json'):
        text = f'serving state: {state["rollout_json"]}'
    elif state.get('serving_root'):
        looked_for = locations.rollout_json_path(state['serving_root'], model_name)
        text = f'serving state: {state["source"]} (no {looked_for})'
    else:
        text = (f'serving state: {state["source"]} (no local serving root: pass '
                f'--serving-root or --workspace to read a rollout.json)')
    how = state.get('serving_root_from') or ''
    if how.startswith('recorded'):   # Not a flag or the folder next to the store: say so.
        text += f' (serving root {how})'
    return text


def _drift_node(drift):
    """DriftGate: passed or blocked, against what, and each feature's distance."""
    verdict = 'passed' if drift.get('passed') else 'blocked (%s)' % drift.get('state')
    title = f'DriftGate execution {drift["execution_id"]}  {verdict}'
    if not drift.get('checked'):
        return _Node(title, [_kv('not compared', drift.get('note') or 'no baseline statistics')])
    lines = [_kv('compared', f'{drift.get("span")} vs. {drift.get("baseline")}'),
             _kv('allowed', ', '.join(drift.get('allowed_drift') or []) or 'none')]
    for f in drift.get('features') or []:
        lines.append(f'{f["feature"]}: {f["measure"]} {f["distance"]:.4f} '
                     f'(threshold {f["threshold"]:.2f}) {"DRIFTED" if f["drifted"] else "ok"}')
    if drift.get('features') is None:
        lines.append('distances: not readable (files missing)')
    return _Node(title, lines)


def _header_lines(record):
    lines = [_served_headline(record)]
    state = serving_state_line(record.get('served'), record['model_name'])
    if state:
        lines.append('  ' + state)
    lines.append(f'  pipeline {record["pipeline"]}, {record["store"]}')
    lines.append('  (Type #N: artifact id N; execution N: execution id N)')
    lines.append('')
    return lines


def _trainer_node(trainer):
    fingerprint = trainer.get('module_fingerprint') or {}
    code = (f'sha256 {fingerprint["sha256"]} ({fingerprint["detail"]})'
            if fingerprint.get('recorded') else
            f'not fingerprinted ({fingerprint.get("detail", "")})')
    details = [
        _kv('run', f'{trainer.get("run") or "?"}, started {when(trainer.get("started_at"))}'
                   f' ({trainer.get("seconds")} s)'),
        _kv('run_fn', trainer.get('run_fn') or 'n/a'),
        _kv('module code', code),
        _kv('steps', f'train {trainer.get("train_steps")}, eval {trainer.get("eval_steps")}'),
        _kv('custom_config', json.dumps(trainer.get('custom_config') or {}, sort_keys=True)),
    ]
    if trainer.get('hyperparameters'):
        details.append(_kv('hyperparameters', _hparams_text(trainer['hyperparameters'])))
        details.append(_kv('', f'({trainer.get("hyperparameters_note")})'))
    base = trainer.get('base_model')
    details.append(_kv('warm start from', _baseline_text(base)
                       if base else 'nothing (trained from scratch)'))
    if trainer.get('model_run'):
        details.append(_kv('TensorBoard logs', trainer['model_run']['uri']))
    return _Node(f'Trainer execution {trainer["execution_id"]}  {trainer["state"]}', details)


def _transform_node(transform):
    tg = transform['transform_graph']
    return _Node(f'{_ref(tg)}  {tg["uri"]}', [
        _kv('made by', f'Transform execution {transform.get("execution_id")} '
                       f'{transform.get("state")}, run {transform.get("run")}'),
        _kv('preprocessing_fn', transform.get('preprocessing_fn') or
            transform.get('module_file') or 'n/a'),
    ])


def _examples_node(examples):
    splits = examples.get('splits')
    split_text = (', '.join(f'{k} {v}' for k, v in sorted(splits.items(), reverse=True))
                  if splits else 'unknown (statistics not readable)')
    gen = examples.get('produced_by') or {}
    spans = (f'spans {examples["span_range"]}' if examples.get('span_range')
             else f'span {examples.get("span")}')
    version = examples.get('version') if examples.get('version') is not None else 'n/a'
    return _Node(f'{_ref(examples)}  {spans}, version {version}  {examples["uri"]}', [
        _kv('input', f'{examples.get("input_base")}: '
                     f'{", ".join(p for p in examples.get("input_patterns") or [] if p)}'),
        _kv('fingerprint', examples.get('input_fingerprint') or 'n/a'),
        _kv('splits', split_text),
        _kv('made by', f'{gen.get("type")} execution {gen.get("execution_id")} '
                       f'{gen.get("state")}, run {gen.get("run")}'),
    ])


def _schema_node(schema):
    source = schema.get('source_file') or schema['uri']
    return _Node(f'{_ref(schema)}  {source}',
                 [_kv('features', schema['features'] if schema.get('features') is not None
                      else 'unknown (schema file not readable)')])


def _anomalies_node(anomalies):
    by_split = anomalies.get('by_split')
    if by_split is None:
        found = ['not readable (files missing)']
    else:
        found = [f'{split}: {row["feature"]}: {row["description"]}'
                 for split, rows in sorted(by_split.items()) for row in rows]
    count = anomalies.get('count')
    title = f'{_ref(anomalies)}  ' + ('no anomalies' if count == 0 else
                                      f'{count} anomalies' if count is not None else '')
    return _Node(title, found if count != 0 else [])


def _gate_node(gate):
    allowed = ', '.join(gate.get('allowed_anomalies') or []) or 'none'
    return _Node(f'ValidationGate execution {gate["execution_id"]}  '
                 f'{"passed" if gate.get("passed") else "blocked (" + gate["state"] + ")"}',
                 [_kv('allowed', allowed)])


def served_by_text(served_by):
    """'taxi v1 stable 3620, v2 canary 402' from a capture record's served_by."""
    parts, last_model = [], None
    for entry in served_by or []:
        model = entry.get('model')
        name = f'{model} ' if model != last_model else ''
        last_model = model
        parts.append(f'{name}v{entry.get("version")} {entry.get("role")} {entry.get("rows")}')
    return ', '.join(parts) or 'unknown'


def _capture_span_lines(span):
    if span.get('error'):
        return [_kv('manifest', span['error'])]
    rows = span.get('rows') or {}
    labels = span.get('labels') or {}
    times = span.get('time_range') or {}
    rate = span.get('capture_rate')
    rates = span.get('capture_rates') or []
    rate_text = (f'{rate:g}' if rate is not None else
                 'mixed ' + ', '.join(f'{r:g}' for r in rates) if rates else 'unknown')
    return [
        _kv('span', f'{span.get("span")} ({span["manifest"]})'),
        _kv('served by', served_by_text(span.get('served_by'))),
        _kv('served', f'{when(times.get("first_served_at"))} .. '
                      f'{when(times.get("last_served_at"))}, capture rate {rate_text}'),
        _kv('rows', ', '.join(f'{k} {rows[k]}' for k in ('captured', 'labeled', 'unlabeled',
                                                          'rejected') if k in rows)),
        _kv('labels', f'{span.get("label_column")}; ' + ', '.join(
            f'{k} {labels[k]}' for k in ('pending', 'unknown', 'duplicate') if k in labels)),
        _kv('from', f'capture span {span.get("capture_span")} of {span.get("capture_dir")}, '
                    f'exported {when(span.get("exported_at"))}'),
    ]


def _capture_node(capture):
    """Production capture: which versions served the rows the model was trained on."""
    details = []
    for span in capture.get('spans') or []:
        details.extend(_capture_span_lines(span))
    return _Node(f'data source: {capture["source"]} (served by '
                 f'{served_by_text(capture.get("served_by"))})', details)


def _data_node(record):
    """The examples a model trained on, with their statistics, schema and data checks."""
    node = _examples_node(record['examples'])
    if record.get('capture'):
        node.children.append(_capture_node(record['capture']))
    for key, child in (('statistics', lambda stats: _Node(f'{_ref(stats)}  {stats["uri"]}')),
                       ('schema', _schema_node), ('anomalies', _anomalies_node),
                       ('validation_gate', _gate_node), ('drift', _drift_node)):
        if record.get(key):
            node.children.append(child(record[key]))
    return node


def _evaluation_node(evaluation, g, show_slices):
    verdict = {True: 'BLESSED', False: 'NOT BLESSED', None: 'no blessing'}[
        evaluation.get('blessed')]
    baseline = evaluation.get('baseline')
    details = [_kv('run', f'{evaluation.get("run")}'),
               _kv('baseline', _baseline_text(baseline) if baseline
                   else 'none (nothing served yet: value thresholds only)')]
    for i, row in enumerate(evaluation.get('thresholds') or []):
        details.append(_kv('thresholds' if i == 0 else '', _threshold_text(row)))
    validation = evaluation.get('validation')
    if validation is not None:
        details.append(_kv('validation', 'all thresholds met' if validation['ok'] else
                           'FAILED: ' + '; '.join(validation['failures'])))
    details.extend(_metrics_block(evaluation, g, show_slices))
    return _Node(f'Evaluator execution {evaluation["execution_id"]}  {verdict}', details)


def _pushed_node(pushed, model_node, g):
    pusher = pushed.get('produced_by') or {}
    if pushed.get('pushed'):
        staged = f'staged as {pushed.get("role_at_push")}'
        if pushed.get('challenged_stable_version'):
            staged += f' against stable v{pushed["challenged_stable_version"]}'
        title = f'{_ref(pushed)}  v{pushed.get("version")} {g.arrow} {pushed.get("destination")}'
    else:
        staged = 'not pushed (model not blessed)'
        title = f'{_ref(pushed)}  not pushed'
    return _Node(title, [
        _kv('pushed' if pushed.get('pushed') else 'recorded',
            f'{when(pushed.get("created_at"))}, {staged}'),
        _kv('made by', f'{pusher.get("type")} execution {pusher.get("execution_id")}, '
                       f'run {pusher.get("run")}'),
    ], [model_node])


def _model_node(record, g, show_slices):
    """The model and, below it, what made it: Trainer, Transform, data, Evaluator."""
    model = record['model']
    node = _Node(f'{_ref(model)}  {model["uri"]}')
    if record.get('trainer'):
        node.children.append(_trainer_node(record['trainer']))
    transform = record.get('transform')
    if transform and transform.get('transform_graph'):
        node.children.append(_transform_node(transform))
    if record.get('examples'):
        node.children.append(_data_node(record))
    if record.get('evaluation'):
        node.children.append(_evaluation_node(record['evaluation'], g, show_slices))
    return node


def _footer_lines(record, g):
    events = record.get('rollout_events') or []
    context = names.rollout_context_name(record['model_name'])
    lines = ['', f'Rollout events (context {context}):' if events else
             'Rollout events: none recorded for this version']
    lines += ['  ' + _event_line(event, g) for event in events]
    lines += [f'warning: {warning}' for warning in record.get('warnings') or []]
    return lines


def show_text(record, show_slices=True, unicode_ok=None):
    """The readable tree of one `lineage show` record."""
    g = _glyphs(unicode_ok)
    model_node = _model_node(record, g, show_slices)
    pushed = record.get('pushed_model')
    root = _pushed_node(pushed, model_node, g) if pushed else model_node
    return '\n'.join(_header_lines(record) + _render_tree(root, g) + _footer_lines(record, g))


def runs_text(record):
    """The `lineage runs` table, newest run first."""
    rows = record['runs']
    if not rows:
        return f'no runs of pipeline {record["pipeline"]} in {record["store"]}'
    table = [('RUN', 'STARTED', 'TIME', 'STATUS', 'SPANS', 'BLESSED', 'PUSHED')]
    for run in rows:
        blessed = {True: 'yes', False: 'no', None: '-'}[run['blessed']]
        pushed = '-'
        if run['pushed_version'] is not None:
            pushed = f'v{run["pushed_version"]}'
            if run.get('serving_now'):
                pushed += f' ({run["serving_now"]} now)' if run['serving_now'] != 'not serving' \
                    else ' (not serving)'
        table.append((run['run'], when(run['started_at']),
                      f'{run["seconds"]} s' if run['seconds'] is not None else '-',
                      run['status'], ','.join(map(str, run['spans'])) or '-', blessed, pushed))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    footer = f'{len(rows)} run(s) of {record["pipeline"]}, newest first; {record["store"]}'
    if record.get('limit') and len(rows) == record['limit']:
        footer += f' (limited to {record["limit"]}; --limit 0 for all)'
    state = serving_state_line(record.get('serving_state'), record['model_name'])
    return '\n'.join(lines + [footer] + ([state] if state else []))


def _cell(value):
    if value is None:
        return '-'
    if isinstance(value, dict):
        return ', '.join(f'{k} {v}' for k, v in sorted(value.items(), reverse=True)) or '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    return str(value)


def _serving_cell(summary):
    served = summary.get('served')
    if not served:
        return 'unknown'
    if served['role'] == 'not serving':
        return 'not serving'
    share = served.get('traffic_percent')
    return served['role'] + (f', {share}% of traffic' if share is not None else '')


class _DiffRows:
    """The rows of the `lineage diff` table: label, a, b, 'changed' or ''."""

    def __init__(self, label_a, label_b):
        self.rows = [('', label_a, label_b, '')]

    def add(self, label, pair_or_a, b_value=None, changed=None):
        """A row from a {'a', 'b', 'changed'} pair, or from two values."""
        if isinstance(pair_or_a, dict) and 'changed' in pair_or_a and b_value is None:
            va, vb, ch = pair_or_a['a'], pair_or_a['b'], pair_or_a['changed']
        else:
            va, vb, ch = pair_or_a, b_value, (pair_or_a != b_value if changed is None else changed)
        self.rows.append((label, _cell(va), _cell(vb), 'changed' if ch else ''))

    def lines(self):
        widths = [max(len(str(r[i])) for r in self.rows) for i in range(4)]
        return ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                for r in self.rows]


def _relabel(pair, a, b):
    return {**pair, 'a': a, 'b': b}


def _add_data_rows(table, record):
    a, b = record['a'], record['b']
    table.add('serving', _serving_cell(a), _serving_cell(b), changed=False)
    table.add('pushed model', f'#{a["pushed_model_id"]}', f'#{b["pushed_model_id"]}',
              changed=False)
    table.add('run', a['run'], b['run'], changed=False)
    data = record['data']
    table.add('span', data['span'])
    ids = data['examples_id']
    table.add('examples', _relabel(ids, f'Examples #{ids["a"]}', f'Examples #{ids["b"]}'))
    table.add('input fingerprint', _fingerprint_pair(data['input_fingerprint']))
    table.add('split sizes', data['splits'])
    table.add('anomalies', data['anomalies'])


def _add_schema_rows(table, schema):
    if not schema:
        return
    ids = (f'Schema #{schema["a_id"]}', f'Schema #{schema["b_id"]}')
    if schema['same_artifact']:
        table.add('schema', *ids, changed=False)
        return
    parts = [f'{key} {", ".join(schema[key])}' for key in ('added', 'removed')
             if schema.get(key)]
    if schema.get('changed'):
        parts.append('changed ' + ', '.join(c['feature'] for c in schema['changed']))
    if schema.get('unreadable'):
        parts.append('files not readable')
    table.add('schema', *ids, changed=bool(parts) or None)
    if parts:
        table.rows.append(('', '', '; '.join(parts), ''))


def _add_training_rows(table, training):
    fingerprint = training['module_fingerprint']
    base = training['base_model_version']
    table.add('run_fn', training['run_fn'])
    table.add('module source hash', _relabel(fingerprint, fingerprint['a'] or 'not recorded',
                                             fingerprint['b'] or 'not recorded'))
    table.add('preprocessing_fn', training['preprocessing_fn'])
    table.add('train steps', training['train_steps'])
    table.add('eval steps', training['eval_steps'])
    table.add('warm start from', _relabel(base, _vlabel(base['a']), _vlabel(base['b'])))
    for row in training['hyperparameters']:
        table.add(f'hparam {row["name"]}', json.dumps(row['a']), json.dumps(row['b']),
                  changed=row['changed'])
    for row in training['custom_config']:
        table.add(f'custom_config {row["name"]}', json.dumps(row['a']), json.dumps(row['b']),
                  changed=True)


def _add_evaluation_rows(table, evaluation):
    base = evaluation['baseline_version']
    table.add('blessed', evaluation['blessed'])
    table.add('baseline', _relabel(base, _vlabel(base['a'], 'none'), _vlabel(base['b'], 'none')))


def _diff_metric_lines(record, la, lb, g, show_slices):
    evaluation = record['evaluation']
    lines = ['', f'Metrics ({evaluation["note"]}):']
    lines += _metric_rows(evaluation['slices'], la, lb, g, show_slices)
    h2h = evaluation.get('head_to_head')
    if h2h:
        lines += ['', f'Head to head on the same data: {h2h["evaluated_in"]}\'s evaluation '
                      f'(span {h2h["span"]} eval split), {h2h["baseline"]} was its baseline:']
        lines += _metric_rows(h2h['slices'], la, lb, g, show_slices)
    return lines


def diff_text(record, show_slices=True, unicode_ok=None):
    """The side-by-side `lineage diff` table."""
    g = _glyphs(unicode_ok)
    la, lb = record['a']['label'], record['b']['label']
    table = _DiffRows(la, lb)
    _add_data_rows(table, record)
    _add_schema_rows(table, record.get('schema'))
    _add_training_rows(table, record['training'])
    _add_evaluation_rows(table, record['evaluation'])
    lines = [f'lineage diff {record["model_name"]} {la} vs {lb}  (pipeline {record["pipeline"]}, '
             f'{record["store"]})', '']
    lines += table.lines()
    lines += _diff_metric_lines(record, la, lb, g, show_slices)
    state = serving_state_line(record.get('serving_state'), record['model_name'])
    if state:
        lines += ['', state]
    lines += [f'warning: {warning}' for warning in record.get('warnings') or []]
    return '\n'.join(lines)


def _fingerprint_pair(pair):
    """Only the parts of two ExampleGen fingerprints that differ (they are long)."""
    a, b = pair['a'] or '', pair['b'] or ''
    if not pair['changed'] or not a or not b:
        short = lambda t: t if len(t) <= 40 else t[:37] + '...'  # noqa: E731
        return {**pair, 'a': short(a) or None, 'b': short(b) or None}
    pa, pb = a.split(','), b.split(',')
    if len(pa) != len(pb):
        return pair
    keep = [i for i, (x, y) in enumerate(zip(pa, pb)) if x != y]
    return {**pair, 'a': ','.join(pa[i] for i in keep), 'b': ','.join(pb[i] for i in keep)}


def _vlabel(version, none='-'):
    return f'v{version}' if version is not None else none


def _metric_rows(slices, la, lb, g, show_slices=True):
    """Overall metrics one per line, then one compact line per slice."""
    if not slices:
        return ['  (no metrics readable)']
    out = []
    overall = [s for s in slices if s['slice'] == 'overall']
    rest = [s for s in slices if s['slice'] != 'overall']
    for s in overall:
        out.append(f'  {"overall":<17}{la:>10}{lb:>10}{g.delta:>10}')
        for m in _ordered(s['metrics']):
            cell = s['metrics'][m]
            out.append(f'    {m:<15}{metric_value(m, cell["a"]):>10}'
                       f'{metric_value(m, cell["b"]):>10}{metric_delta(m, cell["delta"]):>10}')
    if not rest:
        return out
    if not show_slices:
        return out + [f'  {len(rest)} slices (omitted; drop --no-slices)']
    width = max(len(s['slice']) for s in rest) + 2
    metrics = [m for m in _ordered({m for s in rest for m in s['metrics']})
               if m not in ('example_count', 'loss')]
    head = f'  {"per slice":<{width}}{"examples " + la:>12}{lb:>6}'
    for m in metrics:
        head += f'  {m + " " + la:>{len(m) + 4}}{lb:>8}{g.delta:>8}'
    out.append(head)
    for s in rest:
        counts = s['metrics'].get('example_count', {})
        row = (f'  {s["slice"]:<{width}}{metric_value("example_count", counts.get("a")):>12}'
               f'{metric_value("example_count", counts.get("b")):>6}')
        for m in metrics:
            cell = s['metrics'].get(m, {})
            row += (f'  {metric_value(m, cell.get("a")):>{len(m) + 4}}'
                    f'{metric_value(m, cell.get("b")):>8}{metric_delta(m, cell.get("delta")):>8}')
        out.append(row)
    return out
