"""`python -m bench --quick`, the CI-sized version of `make bench`, end to end (minutes)."""
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
    for who in ('reference', 'ours'):
        assert summary[who]['wall_s'] > 1 and summary[who]['cpu_s'] > 1 and summary[who]['peak_rss_mb'] > 100
    assert summary['wall_ratio_median'] == pytest.approx(summary['ours']['wall_s'] / summary['reference']['wall_s'])
    # Both models scored on the same eval split, and both learned something.
    acc = results['accuracy']
    assert acc['ours']['examples'] == acc['reference']['examples'] > 100
    assert acc['ours']['auc'] > 0.75 and acc['reference']['auc'] > 0.75

    rerun = results['rerun']
    assert set(rerun['rerun']['states'].values()) == {'cached'}
    new_span = rerun['new_span']['states']
    assert new_span['Trainer'] == 'executed' and new_span['ImportSchemaGen'] == 'cached'

    sizes = results['scaling']['sizes']
    assert [s['rows'] for s in sizes] == [1000, 3000]
    assert 'total' in results['scaling']['slopes']
    md = (out / 'results.md').read_text()
    assert 'ours / reference' in md and 'Scaling with rows' in md
    assert (out / 'components.png').read_bytes()[:4] == b'\x89PNG'
