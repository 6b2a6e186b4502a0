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


REFERENCES = (reference.SHIPPED, reference.IN_MEMORY)


def _run_reference(work, csv_path, i, variant):
    home = os.path.join(work, '%s-%d' % (variant, i))
    reference.prepare_home(home, csv_path)
    m = measure.run_measured(reference.command(home, variant),
                             os.path.join(work, '%s-%d.log' % (variant, i)), env=reference.env(home))
    _check(m, 'reference pipeline (%s)' % variant)
    return home, _row(m, measure.component_seconds(reference.metadata_path(home)))


def _ratios(ours, ref):
    """Medians over pairs of ours / reference: wall, CPU, memory."""
    return {'wall_ratio_median': statistics.median(o['wall_s'] / r['wall_s'] for o, r in zip(ours, ref)),
            'cpu_ratio_median': statistics.median(o['cpu_s'] / r['cpu_s'] for o, r in zip(ours, ref)),
            'memory_ratio_median': statistics.median(
                o['peak_rss_mb'] / r['peak_rss_mb'] for o, r in zip(ours, ref))}


def versus_reference(work, csv_path, pairs, references=REFERENCES, out=print):
    """Alternating cold runs: each reference kind in `references`, then ours, ...
    (median of pairs).

    summary: medians per run kind; summary['vs'][kind] is ours vs. each
    reference kind; the flat *_ratio_median keys are ours vs. the reference as
    shipped, when it ran (results written before the in-memory anchor existed).
    """
    runs = {kind: [] for kind in tuple(references) + ('ours',)}
    last = {}
    for i in range(pairs):
        homes = {}
        for variant in references:
            homes[variant], row = _run_reference(work, csv_path, i, variant)
            runs[variant].append(row)
            out('  pair %d: %-19s %.1f s' % (i + 1, variant, row['wall_s']))

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
        out('  pair %d: %-19s %.1f s' % (i + 1, 'ours', m.wall_s))
        last = {'homes': homes, 'ws': ws, 'data_root': data_root, 'ours_result': result,
                'ours_row': runs['ours'][-1], 'ours_log': m.log_path}

    summary = {}
    for who, rows in runs.items():
        summary[who] = {k: statistics.median(r[k] for r in rows) for k in ('wall_s', 'cpu_s', 'peak_rss_mb')}
    if reference.SHIPPED in references:
        summary.update(_ratios(runs['ours'], runs[reference.SHIPPED]))
    summary['vs'] = {kind: _ratios(runs['ours'], runs[kind]) for kind in references}
    return {'runs': runs, 'summary': summary, 'pairs': pairs}, last


def accuracy_on_same_split(last):
    """Every model scored on one eval split: the references' own (each
    reference splits the same CSV with the same hash, so any one will do)."""
    from bench import scoring
    homes = last['homes']
    split = reference.eval_split_dir(next(iter(homes.values())))
    ours_model = os.path.join(last['ours_result']['model_uri'], 'Format-Serving')
    scores = {'eval_split': split, 'ours': scoring.score(ours_model, split)}
    for kind, home in homes.items():
        scores[kind] = scoring.score(reference.trained_model_dir(home), split)
    return scores


def _timed_rerun(ws, data_root, log_name):
    md = os.path.join(ws, 'metadata.sqlite')
    before = measure.last_execution_id(md)
    m = measure.run_measured(_ours_cmd(ws, data_root, '--hash-buckets', '2,1'),
                             os.path.join(os.path.dirname(ws), log_name), env=_ours_env(), cwd=PROJECT_ROOT)
    result = _bench_result(m)
    return {'wall_s': round(m.wall_s, 2), 'pipeline_s': round(result['seconds'], 2),
            'states': measure.execution_states(md, before)}


def rerun_and_new_span(last, new_span_rows, after_first_push=True, out=print):
    """Re-runs of the same span, and one with a new span added.

    The first run of a fresh workspace stages the first model as stable, which
    changes the baseline of any later run: so the first re-run re-trains and
    re-evaluates against it (correctly), and only the next one has nothing
    changed. Both are reported. Without `after_first_push` (the quick bench)
    the new span comes first instead: it is judged against that first model,
    which stays stable, so the re-run after it has nothing changed (one run less).
    """
    ws, data_root = last['ws'], last['data_root']
    result = {}
    if after_first_push:
        result['after_first_push'] = _timed_rerun(ws, data_root, 'rerun-after-first-push.log')
        out('  re-run after the first push (new baseline): %.1f s'
            % result['after_first_push']['wall_s'])
        result['rerun'] = _rerun_nothing_changed(ws, data_root, out)
    generate.write_span(data_root, 2, new_span_rows, seed=7, drift=0.2)
    new_span = _timed_rerun(ws, data_root, 'newspan.log')
    new_span['rows'] = new_span_rows
    out('  new span added: %.1f s; re-executed: %s' % (
        new_span['wall_s'], ', '.join(k for k, v in new_span['states'].items() if v == 'executed')))
    result['new_span'] = new_span
    if not after_first_push:
        result['rerun'] = _rerun_nothing_changed(ws, data_root, out)
    return result


def _rerun_nothing_changed(ws, data_root, out):
    rerun = _timed_rerun(ws, data_root, 'rerun.log')
    out('  re-run, nothing changed: %.1f s (pipeline %.2f s)' % (rerun['wall_s'], rerun['pipeline_s']))
    return rerun


def pair_scaling_point(last, rows):
    """The pair's cold run of ours as a scaling point of `rows` rows (no second cold run)."""
    return dict(last['ours_row'], rows=rows, beam_mode=_beam_mode_from_log(last['ours_log']),
                source='the pair\'s cold run (taxi sample, 2:1 split)')


def scaling(work, sizes, measured=None, out=print):
    """One cold run per size on generated data; per-component seconds and rows/s.

    measured: {rows: scaling point} already measured cold (pair_scaling_point),
    used for that size instead of another run.
    """
    rows_out = []
    for rows in sizes:
        if rows in (measured or {}):
            rows_out.append(measured[rows])
            out('  %9d rows: %.1f s, peak %.0f MB (%s)' % (
                rows, measured[rows]['wall_s'], measured[rows]['peak_rss_mb'], measured[rows]['source']))
            continue
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
