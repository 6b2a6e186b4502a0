"""`python -m bench --quick`, the CI-sized version of `make bench`, end to end (minutes):
the in-memory reference (the best-configured anchor) and ours once each, the new span
and a re-run, one more scaling size (the pair's run of ours is the first). The full
bench's second reference, as shipped, runs through the same code (`--references`)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e


def test_quick_bench_measures_both_pipelines_and_writes_the_report(tmp_path):
    out = tmp_path / 'results'
    proc = subprocess.run([sys.executable, '-m', 'bench', '--quick', '--only', 'pipeline,scaling',
                           '--out', str(out), '--work', str(tmp_path / 'work')],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())

    summary = results['pipeline']['summary']
    references = ('reference_in_memory',)   # Quick: the in-memory one only.
    assert set(results['pipeline']['runs']) == {'reference_in_memory', 'ours'}
    for who in references + ('ours',):
        assert summary[who]['wall_s'] > 1 and summary[who]['cpu_s'] > 1 and summary[who]['peak_rss_mb'] > 100
        runs = results['pipeline']['runs'][who]
        assert len(runs) == 1 and 'Trainer' in runs[0]['components_s']
    assert set(summary['vs']) == set(references) and 'wall_ratio_median' not in summary
    assert summary['vs']['reference_in_memory']['wall_ratio_median'] == pytest.approx(
        summary['ours']['wall_s'] / summary['reference_in_memory']['wall_s'])
    # Both models scored on the same eval split, and both learned something.
    acc = results['accuracy']
    assert acc['ours']['examples'] == acc['reference_in_memory']['examples'] > 100
    assert all(acc[who]['auc'] > 0.75 for who in references + ('ours',))

    # Quick: the new span first (judged against the first model, which stays
    # stable), then a re-run with nothing changed; no re-run after the first push.
    rerun = results['rerun']
    assert set(rerun['rerun']['states'].values()) == {'cached'}
    new_span = rerun['new_span']['states']
    assert new_span['Trainer'] == 'executed' and new_span['ImportSchemaGen'] == 'cached'
    assert 'after_first_push' not in rerun

    sizes = results['scaling']['sizes']
    assert [s['rows'] for s in sizes] == [2000, 6000]
    # The first point is the pair's cold run of ours (2,000-row sample), not another run.
    assert sizes[0]['wall_s'] == results['pipeline']['runs']['ours'][0]['wall_s']
    assert sizes[0]['components_s'] == results['pipeline']['runs']['ours'][0]['components_s']
    assert sizes[1]['wall_s'] > 1 and 'source' not in sizes[1]
    assert 'total' in results['scaling']['slopes']
    md = (out / 'results.md').read_text()
    assert 'ours / reference in-memory**' in md and 'target wall' in md and 'Scaling with rows' in md
    assert 'ours / reference**' not in md
    assert "2000 rows: the pair's cold run" in md and 'nothing changed' in md
    assert (out / 'components.png').read_bytes()[:4] == b'\x89PNG'
