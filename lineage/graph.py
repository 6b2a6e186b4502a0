"""The lineage of one model version as a picture: Graphviz DOT, and PNG.

`to_dot` writes DOT text (no dependency). `write_png` renders it with the
Graphviz `dot` binary when installed (the better layout); otherwise it draws
a layered layout with Pillow (pinned in requirements/lock.txt), so `--png`
works on a laptop without Graphviz too.
"""

import os
import shutil
import subprocess

from lineage.errors import LineageError

_STYLE = {
    'artifact': {'shape': 'note', 'fillcolor': '#eef3fb'},
    'execution': {'shape': 'box', 'style': 'rounded,filled', 'fillcolor': '#f4f4f4'},
    'served': {'shape': 'doubleoctagon', 'fillcolor': '#d9f2d9'},
    'event': {'shape': 'cds', 'fillcolor': '#fff4d6'},
    'external': {'shape': 'note', 'fillcolor': '#ffffff', 'style': 'dashed'},
}
_PIL_FILL = {'artifact': '#eef3fb', 'execution': '#f4f4f4', 'served': '#d9f2d9',
             'event': '#fff4d6', 'external': '#ffffff'}


class Graph:
    """Nodes (id -> kind, label lines) and edges (src, dst, label, dashed)."""

    def __init__(self):
        self.nodes = {}
        self.edges = []

    def node(self, node_id, kind, *lines):
        if node_id not in self.nodes:
            self.nodes[node_id] = {'kind': kind, 'lines': [str(x) for x in lines if x]}
        return node_id

    def edge(self, src, dst, label='', dashed=False):
        if src in self.nodes and dst in self.nodes and src != dst:
            if not any(e[:2] == (src, dst) for e in self.edges):
                self.edges.append((src, dst, label, dashed))


def _artifact(graph, ref, *extra, kind='artifact'):
    if not ref or ref.get('id') is None:
        return None
    return graph.node(f'a{ref["id"]}', kind, f'{ref.get("type")} #{ref["id"]}', *extra)


def _execution(graph, ref, *extra):
    if not ref or ref.get('execution_id') is None:
        return None
    return graph.node(f'e{ref["execution_id"]}', 'execution',
                      f'{ref.get("type")} (execution {ref["execution_id"]})', ref.get('state'),
                      *extra)


def _data_nodes(g, record):
    """Examples, schema, statistics, anomalies and the gate: (examples, schema, gate)."""
    examples = record.get('examples') or {}
    ex = _artifact(g, examples, f'spans {examples["span_range"]}' if examples.get('span_range')
                   else f'span {examples.get("span")}')
    g.edge(_execution(g, examples.get('produced_by')), ex)
    schema = record.get('schema') or {}
    sc = _artifact(g, schema, f'{schema.get("features")} features')
    g.edge(_execution(g, schema.get('produced_by')), sc)
    stats = record.get('statistics') or {}
    st = _artifact(g, stats)
    stats_gen = _execution(g, stats.get('produced_by'))
    g.edge(ex, stats_gen)
    g.edge(stats_gen, st)
    anomalies = record.get('anomalies') or {}
    an = _artifact(g, anomalies, f'{anomalies.get("count")} anomalies'
                   if anomalies.get('count') is not None else '')
    validator = _execution(g, anomalies.get('produced_by'))
    g.edge(st, validator)
    g.edge(sc, validator)
    g.edge(validator, an)
    gate_ref = record.get('validation_gate')
    gate = _execution(g, gate_ref, 'passed' if (gate_ref or {}).get('passed') else '')
    g.edge(an, gate)
    return ex, sc, gate


def _transform_nodes(g, record, ex, sc, gate):
    """Transform and its outputs: (transform graph, transformed examples)."""
    transform = record.get('transform') or {}
    tr = _execution(g, transform)
    g.edge(ex, tr)
    g.edge(sc, tr)
    g.edge(gate, tr, 'gate', dashed=True)
    tg = _artifact(g, transform.get('transform_graph'))
    txe = _artifact(g, transform.get('transformed_examples'), 'transformed')
    g.edge(tr, tg)
    g.edge(tr, txe)
    return tg, txe


def _baseline_node(g, artifact):
    return _artifact(g, artifact, f'stable v{artifact.get("version")}'
                     if artifact.get('version') else '', kind='external')


def _trainer_nodes(g, record, inputs):
    """The Trainer (fed by `inputs`) and the model it made."""
    trainer = record.get('trainer') or {}
    tn = _execution(g, trainer, f'train {trainer.get("train_steps")} / eval '
                                f'{trainer.get("eval_steps")} steps' if trainer else '')
    for src in inputs:
        g.edge(src, tn)
    base = trainer.get('base_model')
    if base:
        g.edge(_baseline_node(g, base), tn, 'warm start', dashed=True)
    model = _artifact(g, record.get('model'))
    g.edge(tn, model)
    return model


def _evaluation_nodes(g, record, model, ex):
    """The Evaluator and its outputs: (evaluation, blessing)."""
    evaluation = record.get('evaluation') or {}
    ev = _execution(g, evaluation)
    g.edge(model, ev)
    g.edge(ex, ev)
    baseline = evaluation.get('baseline')
    if baseline:
        g.edge(_baseline_node(g, baseline), ev, 'baseline', dashed=True)
    verdict = {True: 'blessed', False: 'NOT blessed'}.get(evaluation.get('blessed'), '')
    bl = _artifact(g, evaluation.get('blessing'), verdict)
    el = _artifact(g, evaluation.get('evaluation'))
    g.edge(ev, el)
    g.edge(ev, bl)
    return el, bl


def _push_nodes(g, record, inputs):
    """The pusher, its PushedModel, what serves it now and its rollout events."""
    pushed = record.get('pushed_model') or {}
    pm = _artifact(g, pushed, f'v{pushed.get("version")}' if pushed.get('pushed') else 'not pushed')
    pusher = _execution(g, pushed.get('produced_by'))
    for src in inputs:
        g.edge(src, pusher)
    g.edge(pusher, pm)
    served = record.get('served')
    if served and pm:
        share = served.get('traffic_percent')
        sv = g.node('served', 'served', f'{record["model_name"]} v{served["version"]}',
                    served['role'] + (f' {share}%' if share is not None
                                      and served['role'] != 'not serving' else ''))
        g.edge(pm, sv)
    previous = pm
    for i, event in enumerate(record.get('rollout_events') or []):
        node = g.node(f'r{i}', 'event', event.get('event'), (event.get('at') or '')[:19],
                      event.get('actor'))
        g.edge(previous, node, 'audit' if previous == pm else '', dashed=previous != pm)
        previous = node


def build_graph(record):
    """The lineage graph of a `show` record, data flowing top to bottom."""
    g = Graph()
    ex, sc, gate = _data_nodes(g, record)
    tg, txe = _transform_nodes(g, record, ex, sc, gate)
    model = _trainer_nodes(g, record, (txe, tg, sc))
    el, bl = _evaluation_nodes(g, record, model, ex)
    _push_nodes(g, record, (model, el, bl))
    return g


def _dot_quote(text):
    return '"' + str(text).replace('\\', '\\\\').replace('"', '\\"') + '"'


def to_dot(record):
    """Graphviz DOT text for a `show` record."""
    graph = build_graph(record)
    title = record['model_name']
    pushed = record.get('pushed_model') or {}
    if pushed.get('version') is not None:
        title += f' v{pushed["version"]}'
    caption = 'lineage of %s (%s)' % (title, record['pipeline'])
    lines = [f'digraph {_dot_quote("lineage " + title)} {{',
             '  rankdir=TB;',
             f'  label={_dot_quote(caption)};',
             '  labelloc=t; fontname="Helvetica";',
             '  node [fontname="Helvetica", fontsize=10, style=filled];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for node_id, node in graph.nodes.items():
        attrs = dict(_STYLE[node['kind']])
        attrs['label'] = '\\n'.join(line.replace('\\', '\\\\').replace('"', '\\"')
                                    for line in node['lines'])
        text = ', '.join(f'{k}="{v}"' for k, v in sorted(attrs.items()))
        lines.append(f'  {node_id} [{text}];')
    for src, dst, label, dashed in graph.edges:
        attrs = []
        if label:
            attrs.append(f'label={_dot_quote(label)}')
        if dashed:
            attrs.append('style=dashed')
        lines.append(f'  {src} -> {dst}' + (f' [{", ".join(attrs)}]' if attrs else '') + ';')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def _render_with_graphviz(dot_text, path, dot_binary):
    try:
        result = subprocess.run([dot_binary, '-Tpng', '-o', path], input=dot_text.encode(),
                                capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LineageError(f'graphviz failed to render {path}: {exc}') from exc
    if result.returncode != 0:
        raise LineageError(f'graphviz failed to render {path}: '
                           f'{result.stderr.decode(errors="replace").strip()[:200]}')


def _layers(graph):
    """Rank = longest path from a source; then barycentre ordering per rank."""
    rank = {n: 0 for n in graph.nodes}
    for _ in range(len(graph.nodes)):  # Bellman-Ford style relaxation on a DAG.
        changed = False
        for src, dst, _, _ in graph.edges:
            if rank[dst] < rank[src] + 1:
                rank[dst] = rank[src] + 1
                changed = True
        if not changed:
            break
    children = {n: [d for s, d, _, _ in graph.edges if s == n] for n in graph.nodes}
    for node_id in graph.nodes:
        # A source sits just above its first consumer, not in the top row:
        # the baseline model belongs next to the Trainer, not the data.
        if not any(d == node_id for _, d, _, _ in graph.edges) and children[node_id]:
            rank[node_id] = max(0, min(rank[c] for c in children[node_id]) - 1)
    layers = {}
    for node_id in graph.nodes:  # Insertion order: a stable first ordering.
        layers.setdefault(rank[node_id], []).append(node_id)
    ordered = [layers[r] for r in sorted(layers)]
    parents = {n: [s for s, d, _, _ in graph.edges if d == n] for n in graph.nodes}
    for _ in range(2):  # Two sweeps pull children under their parents.
        position = {n: i for layer in ordered for i, n in enumerate(layer)}
        for layer in ordered[1:]:
            layer.sort(key=lambda n: (sum(position[p] for p in parents[n]) /
                                      len(parents[n])) if parents[n] else position[n])
            for i, n in enumerate(layer):
                position[n] = i
    return ordered


def _render_with_pillow(graph, path, title):
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType sizing: the bitmap font.
        font = ImageFont.load_default()
    layers = _layers(graph)
    pad_x, pad_y, gap_x, gap_y, margin = 10, 6, 28, 46, 24
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))

    def text_size(text):
        box = probe.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    line_h = text_size('Ag')[1] + 4
    size = {}
    for node_id, node in graph.nodes.items():
        width = max(text_size(line)[0] for line in node['lines']) + 2 * pad_x
        size[node_id] = (width, line_h * len(node['lines']) + 2 * pad_y)
    row_w = [sum(size[n][0] for n in layer) + gap_x * (len(layer) - 1) for layer in layers]
    row_h = [max(size[n][1] for n in layer) for layer in layers]
    title_h = line_h + 10
    width = max(row_w + [text_size(title)[0]]) + 2 * margin
    height = sum(row_h) + gap_y * (len(layers) - 1) + 2 * margin + title_h
    image = Image.new('RGB', (int(width), int(height)), 'white')
    draw = ImageDraw.Draw(image)
    draw.text((margin, margin // 2), title, fill='black', font=font)
    box = {}
    y = margin + title_h
    for layer, w, h in zip(layers, row_w, row_h):
        x = (width - w) / 2
        for node_id in layer:
            nw, nh = size[node_id]
            box[node_id] = (x, y + (h - nh) / 2, x + nw, y + (h - nh) / 2 + nh)
            x += nw + gap_x
        y += h + gap_y
    def spread(node_id, others):
        # Several edges meeting one side are spread along it, in the order
        # of the nodes at their other ends, so arrow heads do not pile up.
        others = sorted(others, key=lambda n: box[n][0])
        x0, _, x1, _ = box[node_id]
        return {n: x0 + (x1 - x0) * (i + 1) / (len(others) + 1) for i, n in enumerate(others)}

    out_x = {n: spread(n, [d for s, d, _, _ in graph.edges if s == n])
             for n in graph.nodes}
    in_x = {n: spread(n, [s for s, d, _, _ in graph.edges if d == n])
            for n in graph.nodes}
    for src, dst, label, dashed in graph.edges:
        x0, y0 = out_x[src][dst], box[src][3]
        x1, y1 = in_x[dst][src], box[dst][1]
        colour = '#888888' if dashed else '#333333'
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=1)
        # Arrow head: a small triangle pointing along the edge.
        dx, dy = x1 - x0, y1 - y0
        length = max((dx * dx + dy * dy) ** 0.5, 1.0)
        ux, uy = dx / length, dy / length
        draw.polygon([(x1, y1), (x1 - 8 * ux + 4 * uy, y1 - 8 * uy - 4 * ux),
                      (x1 - 8 * ux - 4 * uy, y1 - 8 * uy + 4 * ux)], fill=colour)
        if label:
            draw.text(((x0 + x1) / 2 + 4, (y0 + y1) / 2 - line_h / 2), label,
                      fill='#666666', font=font)
    for node_id, node in graph.nodes.items():
        x0, y0, x1, y1 = box[node_id]
        radius = 8 if node['kind'] in ('execution', 'served') else 2
        draw.rounded_rectangle([x0, y0, x1, y1], radius=radius,
                               fill=_PIL_FILL[node['kind']], outline='#333333',
                               width=2 if node['kind'] == 'served' else 1)
        for i, line in enumerate(node['lines']):
            draw.text((x0 + pad_x, y0 + pad_y + i * line_h), line, fill='black', font=font)
    image.save(path, format='PNG')


def graphviz_binary():
    """Path of Graphviz's `dot`, or None."""
    return shutil.which('dot')


def write_png(record, path, renderer='auto'):
    """Writes the lineage picture to `path`; returns the renderer used.

    renderer: 'auto' (graphviz if installed, else pillow), 'graphviz' or 'pillow'.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise LineageError(f'cannot write {path}: directory {directory} does not exist')
    dot_binary = graphviz_binary()
    if renderer == 'graphviz' and dot_binary is None:
        raise LineageError('graphviz `dot` is not installed (apt-get install graphviz); '
                           'omit --renderer to draw with Pillow instead')
    if renderer in ('auto', 'graphviz') and dot_binary is not None:
        _render_with_graphviz(to_dot(record), path, dot_binary)
        return 'graphviz'
    title = f'lineage of {record["model_name"]}'
    pushed = record.get('pushed_model') or {}
    if pushed.get('version') is not None:
        title += f' v{pushed["version"]}'
    try:
        _render_with_pillow(build_graph(record), path, f'{title} ({record["pipeline"]})')
    except OSError as exc:
        raise LineageError(f'cannot write {path}: {exc}') from exc
    return 'pillow'
