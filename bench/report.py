"""Writes bench results as JSON, a Markdown table and PNG plots."""
import json
import os


def _md_pipeline(res):
    s = res['summary']
    lines = ['## Pipeline vs. TFX taxi example (median of %d pairs, cold runs)' % res['pairs'], '',
             '| run | wall s | CPU s | peak RSS MB |', '|---|---|---|---|']
    for who in ('reference', 'ours'):
        lines.append('| %s | %.1f | %.1f | %.0f |' % (who, s[who]['wall_s'], s[who]['cpu_s'], s[who]['peak_rss_mb']))
    lines += ['', '**ours / reference**: wall %.2f×, CPU %.2f×, memory %.2f× (target wall ≤ 0.5×)'
              % (s['wall_ratio_median'], s['cpu_ratio_median'], s['memory_ratio_median']), '']
    comps = sorted(set(res['runs']['reference'][-1]['components_s']) | set(res['runs']['ours'][-1]['components_s']))
    lines += ['| component | reference s | ours s |', '|---|---|---|']
    for c in comps:
        r = res['runs']['reference'][-1]['components_s'].get(c)
        o = res['runs']['ours'][-1]['components_s'].get(c)
        lines.append('| %s | %s | %s |' % (c, '%.1f' % r if r is not None else '—', '%.1f' % o if o is not None else '—'))
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
        for who in ('reference', 'ours'):
            lines.append('| %s | %.4f | %.4f |' % (who, a[who]['auc'], a[who]['binary_accuracy']))
    if 'rerun' in results:
        r = results['rerun']
        lines += ['', '## Re-runs', '',
                  '- after the first push (the baseline is now that model): %.1f s; executed: %s' % (
                      r['after_first_push']['wall_s'],
                      ', '.join(k for k, v in r['after_first_push']['states'].items() if v == 'executed')),
                  '- nothing changed: %.1f s end to end (pipeline %.2f s); executed: %s' % (
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
        comps = sorted(set(res['runs']['reference'][-1]['components_s']) | set(res['runs']['ours'][-1]['components_s']))
        width = 0.4
        for k, who in enumerate(('reference', 'ours')):
            vals = [res['runs'][who][-1]['components_s'].get(c, 0) for c in comps]
            ax.barh([i + k * width for i in range(len(comps))], vals, height=width, label=who)
        ax.set_yticks([i + width / 2 for i in range(len(comps))], comps)
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
