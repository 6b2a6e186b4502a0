"""The bench's measuring, data generation and reporting (fast)."""
import csv
import os
import subprocess
import sys

import pytest

from bench import generate, measure, pipeline_bench, reference, report
from tests.conftest import PROJECT_ROOT


def test_measure_reports_wall_cpu_and_peak_memory_of_the_child(tmp_path):
    # A child that holds ~200 MB and burns a little CPU.
    code = 'import time; b = bytearray(200 * 2**20); t = time.time()\nwhile time.time() - t < 0.3: pass'
    m = measure.run_measured([sys.executable, '-c', code], str(tmp_path / 'log'))
    assert m.returncode == 0
    assert m.peak_rss_mb > 190
    assert m.cpu_s >= 0.25 and m.wall_s >= m.cpu_s * 0.5


def test_measure_reports_failure_exit_code(tmp_path):
    m = measure.run_measured([sys.executable, '-c', 'import sys; print("boom"); sys.exit(3)'],
                             str(tmp_path / 'log'))
    assert m.returncode == 3 and 'boom' in m.log_tail()


def test_generator_is_deterministic_taxi_shaped_and_drifts(tmp_path):
    a = generate.write_span(str(tmp_path / 'a'), 1, 3000, seed=5)
    b = generate.write_span(str(tmp_path / 'b'), 1, 3000, seed=5)
    with open(a) as fa, open(b) as fb:
        assert fa.read() == fb.read()
    with open(a) as f:
        rows = list(csv.DictReader(f))
    with open(generate.taxi_csv()) as f:
        assert list(csv.DictReader(f).fieldnames) == list(rows[0].keys())
    assert len(rows) == 3000
    drifted = generate.write_span(str(tmp_path / 'c'), 1, 3000, seed=5, drift=1.0)
    with open(drifted) as f:
        drows = list(csv.DictReader(f))

    def card_share(rs):
        return sum(r['payment_type'] == 'Credit Card' for r in rs) / len(rs)
    assert card_share(drows) > card_share(rows) + 0.2


def test_slopes_recover_linear_and_fixed_costs():
    sizes = [{'rows': n, 'wall_s': 5 + n / 1000.0,
              'components_s': {'Linear': n / 100.0, 'Fixed': 3.0}} for n in (10_000, 100_000, 1_000_000)]
    slopes = pipeline_bench.fit_slopes(sizes)
    assert slopes['Linear'] == pytest.approx(1.0, abs=0.01)
    assert slopes['Fixed'] == pytest.approx(0.0, abs=0.01)


def test_report_writes_json_markdown_and_plots(tmp_path):
    run = {'wall_s': 10.0, 'cpu_s': 12.0, 'peak_rss_mb': 900, 'components_s': {'Trainer': 4.0}}
    results = {
        'machine': 'test',
        'pipeline': {'pairs': 1, 'runs': {'reference': [dict(run, wall_s=20.0)], 'ours': [run]},
                     'summary': {'reference': {'wall_s': 20.0, 'cpu_s': 24.0, 'peak_rss_mb': 1000},
                                 'ours': {'wall_s': 10.0, 'cpu_s': 12.0, 'peak_rss_mb': 900},
                                 'wall_ratio_median': 0.5, 'cpu_ratio_median': 0.5,
                                 'memory_ratio_median': 0.9}},
        'scaling': {'sizes': [{'rows': 1000, 'wall_s': 5.0, 'cpu_s': 5.0, 'peak_rss_mb': 1, 'beam_mode': 'x',
                               'components_s': {'Trainer': 2.0}},
                              {'rows': 10000, 'wall_s': 9.0, 'cpu_s': 9.0, 'peak_rss_mb': 1, 'beam_mode': 'x',
                               'components_s': {'Trainer': 3.0}}],
                    'slopes': {'total': 0.25}},
    }
    md, pngs = report.write(results, str(tmp_path))
    assert 'wall 0.50×' in md and '| 10000 |' in md
    assert os.path.isfile(tmp_path / 'results.json')
    for png in pngs:
        with open(png, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert len(pngs) == 2


def test_in_memory_reference_is_the_shipped_example_with_one_line_changed(tmp_path):
    shipped = reference.command()[1]
    in_memory = reference.command(str(tmp_path), reference.IN_MEMORY)[1]
    with open(shipped) as a, open(in_memory) as b:
        changed = [(x, y) for x, y in zip(a.read().splitlines(), b.read().splitlines()) if x != y]
    assert [(x.strip(), y.strip()) for x, y in changed] == [
        ("'--direct_running_mode=multi_processing',", "'--direct_running_mode=in_memory',")]


def test_report_gives_both_reference_ratios_and_three_component_columns(tmp_path):
    def row(wall, trainer):
        return {'wall_s': wall, 'cpu_s': wall, 'peak_rss_mb': 1000, 'components_s': {'Trainer': trainer}}
    runs = {'reference': [row(40.0, 9.0)], 'reference_in_memory': [row(20.0, 8.0)], 'ours': [row(10.0, 3.0)]}
    summary = {who: {k: r[0][k] for k in ('wall_s', 'cpu_s', 'peak_rss_mb')} for who, r in runs.items()}
    summary.update(pipeline_bench._ratios(runs['ours'], runs['reference']))  # pylint: disable=protected-access
    summary['vs'] = {kind: pipeline_bench._ratios(runs['ours'], runs[kind])  # pylint: disable=protected-access
                     for kind in pipeline_bench.REFERENCES}
    md, _ = report.write({'machine': 'test', 'pipeline': {'pairs': 1, 'runs': runs, 'summary': summary}},
                         str(tmp_path))
    assert '**ours / reference**: wall 0.25×' in md
    assert '**ours / reference in-memory**: wall 0.50×' in md
    assert '| Trainer | 9.0 | 8.0 | 3.0 |' in md


def _pipeline_results(kinds):
    run = {'wall_s': 10.0, 'cpu_s': 12.0, 'peak_rss_mb': 900, 'components_s': {'Trainer': 4.0}}
    walls = {'reference': 40.0, 'reference_in_memory': 25.0, 'ours': 10.0}
    runs = {k: [dict(run, wall_s=walls[k])] for k in kinds + ('ours',)}
    summary = {k: {'wall_s': walls[k], 'cpu_s': 12.0, 'peak_rss_mb': 900} for k in runs}
    summary['vs'] = {k: {'wall_ratio_median': 10.0 / walls[k], 'cpu_ratio_median': 1.0,
                         'memory_ratio_median': 1.0} for k in kinds}
    return {'machine': 'test', 'pipeline': {'pairs': 1, 'runs': runs, 'summary': summary}}


@pytest.mark.parametrize('kinds', [('reference', 'reference_in_memory'), ('reference_in_memory',)])
def test_the_target_line_is_against_the_in_memory_reference(tmp_path, kinds):
    md = report.to_markdown(_pipeline_results(kinds))
    (target,) = [line for line in md.splitlines() if 'target' in line]
    assert target.startswith('**ours / reference in-memory**: wall 0.40×')
    shipped = [line for line in md.splitlines() if line.startswith('**ours / reference**')]
    assert [line.split(',')[0] for line in shipped] == (
        ['**ours / reference**: wall 0.25×'] if 'reference' in kinds else [])
    assert md.count('| ours |') == 1 and ('as shipped: multi_processing' in md) == ('reference' in kinds)


def test_an_unknown_reference_is_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'bench', '--references', 'in_memory,nope',
                           '--out', str(tmp_path / 'out')], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        '--references: unknown nope; choose from shipped,in_memory')
    assert not (tmp_path / 'out').exists()
