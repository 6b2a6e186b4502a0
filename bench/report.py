"""Writes bench results as JSON, a Markdown table and PNG plots."""
import json
import os


# Run kinds in report order, with their labels; older results have no in-memory reference.
KINDS = (('reference', 'reference (TFX taxi example as shipped: multi_processing)'),
         ('reference_in_memory', 'reference, in-memory DirectRunner (its one-line change)'),
         ('ours', 'ours'))


def _kinds(res):
    return [(kind, label) for kind, label in KINDS if kind in res['runs']]


def _ratio_line(ratios, against):
    return ('**ours / %s**: wall %.2f×, CPU %.2f×, memory %.2f×'
            % (against, ratios['wall_ratio_median'], ratios['cpu_ratio_median'],
               ratios['memory_ratio_median']))


def _md_pipeline(res):
    s = res['summary']
    lines = ['## Pipeline vs. TFX taxi example (median of %d pairs, cold runs)' % res['pairs'], '',
             '| run | wall s | CPU s | peak RSS MB |', '|---|---|---|---|']
    for who, label in _kinds(res):
        lines.append('| %s | %.1f | %.1f | %.0f |' % (label, s[who]['wall_s'], s[who]['cpu_s'], s[who]['peak_rss_mb']))
    vs = dict(s.get('vs', {}))
    if 'reference' not in vs and 'wall_ratio_median' in s:   # Results from before 'vs'.
        vs['reference'] = s
    lines.append('')
    if 'reference_in_memory' in vs:   # The best-configured anchor: the target's.
        lines += [_ratio_line(vs['reference_in_memory'], 'reference in-memory')
                  + ' (the same Beam mode as ours; target wall ≤ 0.5×)', '']
    if 'reference' in vs:
        lines += [_ratio_line(vs['reference'], 'reference') + ' (as shipped)', '']
    kinds = _kinds(res)
    last = {who: res['runs'][who][-1]['components_s'] for who, _ in kinds}
    comps = sorted(set().union(*last.values()))
    lines += ['| component | ' + ' | '.join('%s s' % who.replace('_', ' ') for who, _ in kinds) + ' |',
              '|---' * (1 + len(kinds)) + '|']
    for c in comps:
        lines.append('| %s | %s |' % (c, ' | '.join(
            '%.1f' % last[who][c] if c in last[who] else '—' for who, _ in kinds)))
    return lines


def _mode(beam_line):
    """'--direct_running_mode=in_memory --direct_num_workers=1 (...)' -> 'in_memory×1'."""
    mode = workers = ''
    for token in beam_line.split():
        if token.startswith('--direct_running_mode='):
            mode = token.split('=', 1)[1]
        elif token.startswith('--direct_num_workers='):
            workers = token.split('=', 1)[1]
    return '%s×%s' % (mode, workers) if mode else beam_line


def to_markdown(results):
    lines = ['# tfx-canary benchmarks', '', 'Machine: %s' % results.get('machine', ''), '']
    if 'pipeline' in results:
        lines += _md_pipeline(results['pipeline'])
    if 'accuracy' in results:
        a = results['accuracy']
        lines += ['', '## Accuracy on the same eval split (%d examples)' % a['ours']['examples'], '',
                  '| model | AUC | binary accuracy |', '|---|---|---|']
        for who in (kind for kind, _ in KINDS if kind in a):
            lines.append('| %s | %.4f | %.4f |' % (who.replace('_', ' '), a[who]['auc'],
                                                  a[who]['binary_accuracy']))
    if 'rerun' in results:
        r = results['rerun']
        lines += ['', '## Re-runs', '']
        if 'after_first_push' in r:   # Not in the quick bench.
            lines.append('- after the first push (the baseline is now that model): %.1f s; executed: %s' % (
                r['after_first_push']['wall_s'],
                ', '.join(k for k, v in r['after_first_push']['states'].items() if v == 'executed')))
        lines += ['- nothing changed: %.1f s end to end (pipeline %.2f s); executed: %s' % (
                      r['rerun']['wall_s'], r['rerun']['pipeline_s'],
                      ', '.join(k for k, v in r['rerun']['states'].items() if v == 'executed') or 'none'),
                  '- one new span (%d rows): %.1f s; executed: %s; cached: %s' % (
                      r['new_span']['rows'], r['new_span']['wall_s'],
                      ', '.join(k for k, v in r['new_span']['states'].items() if v == 'executed'),
                      ', '.join(k for k, v in r['new_span']['states'].items() if v == 'cached'))]
    if 'scaling' in results:
        sc = results['scaling']
        comps = sorted(sc['sizes'][0]['components_s'])
        lines += ['', '## Scaling with rows', '',
                  '| rows | beam | wall s | rows/s | peak RSS MB | ' + ' | '.join(comps) + ' |',
                  '|---' * (5 + len(comps)) + '|']
        for r in sc['sizes']:
            lines.append('| %d | %s | %.1f | %.0f | %.0f | %s |' % (
                r['rows'], _mode(r.get('beam_mode', '')), r['wall_s'], r['rows'] / r['wall_s'], r['peak_rss_mb'],
                ' | '.join('%.1f' % r['components_s'].get(c, 0) for c in comps)))
        reused = ['%d rows: %s' % (r['rows'], r['source']) for r in sc['sizes'] if r.get('source')]
        lines += [''] + reused if reused else []
        if sc['slopes']:
            lines += ['', 'log-log slope of seconds vs. rows (1 = linear, 0 = fixed cost): ' +
                      ', '.join('%s %.2f' % kv for kv in sorted(sc['slopes'].items()))]
    if 'serving' in results:
        lines += ['', '## Serving', ''] + results['serving'].get('markdown', [])
    return '\n'.join(lines) + '\n'


def plots(results, out_dir):
    """PNG plots; returns the paths written."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    written = []
    if 'pipeline' in results:
        res = results['pipeline']
        fig, ax = plt.subplots(figsize=(7, 4))
        kinds = [who for who, _ in _kinds(res)]
        comps = sorted(set().union(*(res['runs'][who][-1]['components_s'] for who in kinds)))
        width = 0.8 / len(kinds)
        for k, who in enumerate(kinds):
            vals = [res['runs'][who][-1]['components_s'].get(c, 0) for c in comps]
            ax.barh([i + k * width for i in range(len(comps))], vals, height=width, label=who)
        ax.set_yticks([i + width * (len(kinds) - 1) / 2 for i in range(len(comps))], comps)
        ax.set_xlabel('seconds')
        ax.set_title('Time per component (last pair)')
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, 'components.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if 'scaling' in results and len(results['scaling']['sizes']) > 1:
        sizes = results['scaling']['sizes']
        fig, ax = plt.subplots(figsize=(7, 4))
        rows = [r['rows'] for r in sizes]
        ax.loglog(rows, [r['wall_s'] for r in sizes], 'o-', label='total', linewidth=2)
        for c in sorted(sizes[0]['components_s']):
            ys = [max(r['components_s'].get(c, 0), 1e-2) for r in sizes]
            if max(ys) > 1:
                ax.loglog(rows, ys, '.--', label=c)
        ax.set_xlabel('rows')
        ax.set_ylabel('seconds')
        ax.set_title('Cost vs. rows')
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, 'scaling.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write(results, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2, sort_keys=True)
    md = to_markdown(results)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(md)
    return md, plots(results, out_dir)
