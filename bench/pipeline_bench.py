"""Ours vs. TFX's taxi example, re-run cost, and scaling with rows."""
import json
import os
import shutil
import statistics
import sys

from bench import generate, measure, reference

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ours_cmd(workspace, data_root, *extra):
    return [sys.executable, '-m', 'bench.run_ours', workspace, data_root, *extra]


def _ours_env():
    return dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3',
                PYTHONPATH=PROJECT_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def _bench_result(m):
    with open(m.log_path) as f:
        for line in f:
            if line.startswith('BENCH_RESULT '):
                return json.loads(line[len('BENCH_RESULT '):])
    raise RuntimeError('our pipeline run failed (exit %d); log %s:\n%s'
                       % (m.returncode, m.log_path, m.log_tail()))


def _check(m, what):
    if m.returncode != 0:
        raise RuntimeError('%s failed (exit %d); log %s:\n%s'
                           % (what, m.returncode, m.log_path, m.log_tail()))


def _row(m, components):
    return {'wall_s': round(m.wall_s, 2), 'cpu_s': round(m.cpu_s, 2),
            'peak_rss_mb': round(m.peak_rss_mb), 'components_s': components}


def versus_reference(work, csv_path, pairs, out=print):
    """Alternating cold runs: reference, ours, reference, ours, ... (median of pairs)."""
    runs = {'reference': [], 'ours': []}
    last = {}
    for i in range(pairs):
        home = os.path.join(work, 'ref-%d' % i)
        reference.prepare_home(home, csv_path)
        m = measure.run_measured(reference.command(), os.path.join(work, 'ref-%d.log' % i),
                                 env=reference.env(home))
        _check(m, 'reference pipeline')
        runs['reference'].append(_row(m, measure.component_seconds(reference.metadata_path(home))))
        out('  pair %d: reference %.1f s' % (i + 1, m.wall_s))

        data_root = os.path.join(work, 'ours-data')
        if not os.path.isdir(data_root):
            os.makedirs(os.path.join(data_root, 'span-1'))
            shutil.copy(csv_path, os.path.join(data_root, 'span-1', 'data.csv'))
        ws = os.path.join(work, 'ours-%d' % i)
        # 2:1 hash split, as CsvExampleGen's default in the reference: same eval split.
        m = measure.run_measured(_ours_cmd(ws, data_root, '--hash-buckets', '2,1'),
                                 os.path.join(work, 'ours-%d.log' % i), env=_ours_env(),
                                 cwd=PROJECT_ROOT)
        result = _bench_result(m)
        runs['ours'].append(_row(m, measure.component_seconds(os.path.join(ws, 'metadata.sqlite'))))
        out('  pair %d: ours      %.1f s' % (i + 1, m.wall_s))
        last = {'home': home, 'ws': ws, 'data_root': data_root, 'ours_result': result}

    summary = {}
    for who, rows in runs.items():
        summary[who] = {k: statistics.median(r[k] for r in rows) for k in ('wall_s', 'cpu_s', 'peak_rss_mb')}
    ratios = [o['wall_s'] / r['wall_s'] for o, r in zip(runs['ours'], runs['reference'])]
    summary['wall_ratio_median'] = statistics.median(ratios)
    summary['cpu_ratio_median'] = statistics.median(
        o['cpu_s'] / r['cpu_s'] for o, r in zip(runs['ours'], runs['reference']))
    summary['memory_ratio_median'] = statistics.median(
        o['peak_rss_mb'] / r['peak_rss_mb'] for o, r in zip(runs['ours'], runs['reference']))
    return {'runs': runs, 'summary': summary, 'pairs': pairs}, last


def accuracy_on_same_split(last):
    """Both models scored on the reference's own eval split."""
    from bench import scoring
    split = reference.eval_split_dir(last['home'])
    ours_model = os.path.join(last['ours_result']['model_uri'], 'Format-Serving')
    return {'eval_split': split,
            'reference': scoring.score(reference.trained_model_dir(last['home']), split),
            'ours': scoring.score(ours_model, split)}


def _timed_rerun(ws, data_root, log_name):
    md = os.path.join(ws, 'metadata.sqlite')
    before = measure.last_execution_id(md)
    m = measure.run_measured(_ours_cmd(ws, data_root, '--hash-buckets', '2,1'),
                             os.path.join(os.path.dirname(ws), log_name), env=_ours_env(), cwd=PROJECT_ROOT)
    result = _bench_result(m)
    return {'wall_s': round(m.wall_s, 2), 'pipeline_s': round(result['seconds'], 2),
            'states': measure.execution_states(md, before)}


def rerun_and_new_span(last, new_span_rows, out=print):
    """Re-runs of the same span, then one with a new span added.

    The first run of a fresh workspace stages the first model as stable, which
    changes the baseline of any later run: so the first re-run re-trains and
    re-evaluates against it (correctly), and only the next one has nothing
    changed. Both are reported.
    """
    ws, data_root = last['ws'], last['data_root']
    after_push = _timed_rerun(ws, data_root, 'rerun-after-first-push.log')
    out('  re-run after the first push (new baseline): %.1f s' % after_push['wall_s'])
    rerun = _timed_rerun(ws, data_root, 'rerun.log')
    out('  re-run, nothing changed: %.1f s (pipeline %.2f s)' % (rerun['wall_s'], rerun['pipeline_s']))
    generate.write_span(data_root, 2, new_span_rows, seed=7, drift=0.2)
    new_span = _timed_rerun(ws, data_root, 'newspan.log')
    new_span['rows'] = new_span_rows
    out('  new span added: %.1f s; re-executed: %s' % (
        new_span['wall_s'], ', '.join(k for k, v in new_span['states'].items() if v == 'executed')))
    return {'after_first_push': after_push, 'rerun': rerun, 'new_span': new_span}


def scaling(work, sizes, out=print):
    """One cold run per size on generated data; per-component seconds and rows/s."""
    rows_out = []
    for rows in sizes:
        data_root = os.path.join(work, 'gen-%d' % rows)
        generate.write_span(data_root, 1, rows, seed=rows)
        ws = os.path.join(work, 'scale-%d' % rows)
        m = measure.run_measured(_ours_cmd(ws, data_root), os.path.join(work, 'scale-%d.log' % rows),
                                 env=_ours_env(), cwd=PROJECT_ROOT)
        _bench_result(m)
        comps = measure.component_seconds(os.path.join(ws, 'metadata.sqlite'))
        rows_out.append({'rows': rows, 'wall_s': round(m.wall_s, 2), 'cpu_s': round(m.cpu_s, 2),
                         'peak_rss_mb': round(m.peak_rss_mb), 'components_s': comps,
                         'beam_mode': _beam_mode_from_log(m.log_path)})
        out('  %9d rows: %.1f s, peak %.0f MB' % (rows, m.wall_s, m.peak_rss_mb))
        shutil.rmtree(data_root, ignore_errors=True)  # 1M rows is ~100 MB of CSV.
    return {'sizes': rows_out, 'slopes': fit_slopes(rows_out)}


def _beam_mode_from_log(path):
    with open(path) as f:
        for line in f:
            if line.startswith('Beam: '):
                return line.strip()[len('Beam: '):]
    return ''


def fit_slopes(rows_out):
    """Least-squares slope of log(seconds) on log(rows), total and per component.

    ~1 means cost grows linearly with rows; ~0 means a fixed cost dominates.
    """
    import numpy as np
    if len(rows_out) < 2:
        return {}
    x = np.log([r['rows'] for r in rows_out])
    series = {'total': [r['wall_s'] for r in rows_out]}
    for name in rows_out[0]['components_s']:
        ys = [r['components_s'].get(name, 0.0) for r in rows_out]
        if max(ys) >= 1.0:  # Sub-second steps are all noise: no meaningful slope.
            series[name] = ys
    return {name: round(float(np.polyfit(x, np.log(y), 1)[0]), 3) for name, y in series.items()}
