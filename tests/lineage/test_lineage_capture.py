"""`lineage show` for a model trained on an exported capture span: data source and servers.

A synthetic store (bench/lineage_bench.py) whose ExampleGen read a data root
in tmp, where span 2 is a real `capture export` (manifest included) and span
1 is plain CSV. No pipeline run.
"""
import json
import os

import pytest

from serving import capture, export, labels
from tests.conftest import SCHEMA_PATH
from tests.lineage.test_lineage_unit import bench, lineage

SPEC = labels.label_spec_from_schema(SCHEMA_PATH)
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def _export_span(data_root, capture_dir, span):
    """Captured rows served by v1 stable (2) and v2 canary (1), all labeled, exported as span."""
    sink = capture.CsvFileSink(str(capture_dir), 1, capture.header_from_schema(SCHEMA_PATH))
    served = [('a', 0, 1, 'stable'), ('a', 1, 1, 'stable'), ('b', 0, 2, 'canary')]
    sink.write([capture.CaptureRecord({'fare': 5.0 + i, 'company': 'Cab'}, rid, row,
                                      T0 + 60 * i, 'taxi', version, role, 0.5, 0.5)
                for i, (rid, row, version, role) in enumerate(served)])
    sink.close()
    log = labels.LabelLog(str(capture_dir), SPEC, labels.CapturedIndex().load(str(capture_dir)))
    log.append([labels.Label(rid, row, 1.5) for rid, row, _, _ in served], 'test')
    return export.export(str(capture_dir), 1, str(data_root), SPEC, span=span)


@pytest.fixture
def store(tmp_path):
    """(store path, data root): run 1 trained on span 1 (CSV), run 2 on span 2 (capture)."""
    from ml_metadata.metadata_store import metadata_store
    path = str(tmp_path / 'metadata.sqlite')
    pipeline = bench.SyntheticPipeline(metadata_store.MetadataStore(bench.sqlite_config(path)),
                                       seed=1)
    pipeline.add_run(blessed=True)
    pipeline.add_run(blessed=True)
    assert pipeline.version == 2
    data_root = tmp_path / 'data'
    (data_root / 'span-1').mkdir(parents=True)
    header = capture.header_from_schema(SCHEMA_PATH)
    (data_root / 'span-1' / 'data.csv').write_text(','.join(header) + '\n')
    _export_span(data_root, tmp_path / 'capture', 2)
    # The synthetic ExampleGens read '/data': point them at this data root.
    executions = [e for e in pipeline.store.get_executions() if 'input_base' in e.custom_properties]
    for e in executions:
        e.custom_properties['input_base'].string_value = str(data_root)
    pipeline.store.put_executions(executions)
    return path, data_root


def test_a_model_trained_on_exported_capture_names_its_source_and_servers(store, capfd):
    path, data_root = store
    code, out, err = lineage(capfd, 'show', '--version', 2, '--metadata-path', path, '--json')
    assert code == 0, err
    record = json.loads(out)
    found = record['capture']
    assert found['source'] == 'production capture'
    assert found['served_by'] == [
        {'model': 'taxi', 'version': 1, 'role': 'stable', 'rows': 2},
        {'model': 'taxi', 'version': 2, 'role': 'canary', 'rows': 1}]
    assert found['rows'] == {'captured': 3, 'labeled': 3, 'unlabeled': 0, 'rejected': 0}
    [span] = found['spans']
    assert span['span'] == 2 and span['span_dir'] == str(data_root / 'span-2')
    assert span['manifest'] == str(data_root / 'span-2' / export.MANIFEST)
    assert span['capture_rate'] == 0.5 and span['label_column'] == 'tips'
    assert span['time_range']['first_served_at'] == '2026-01-01T00:00:00+00:00'

    code, out, err = lineage(capfd, 'show', '--version', 2, '--metadata-path', path)
    assert code == 0, err
    assert ('data source: production capture (served by taxi v1 stable 2, v2 canary 1)'
            in out), out
    assert 'capture rate 0.5' in out
    assert 'captured 3, labeled 3, unlabeled 0, rejected 0' in out


def test_a_model_trained_on_plain_csv_says_nothing_about_capture(store, capfd):
    path, _ = store
    code, out, err = lineage(capfd, 'show', '--version', 1, '--metadata-path', path, '--json')
    assert code == 0, err
    assert json.loads(out)['capture'] is None
    code, out, err = lineage(capfd, 'show', '--version', 1, '--metadata-path', path)
    assert code == 0 and 'production capture' not in out


def test_a_damaged_manifest_is_reported_not_guessed(store, capfd):
    path, data_root = store
    with open(data_root / 'span-2' / export.MANIFEST, 'w') as f:
        f.write('{"source": "production capture", "format": 1, ')  # torn
    code, out, err = lineage(capfd, 'show', '--version', 2, '--metadata-path', path, '--json')
    assert code == 0, err
    [span] = json.loads(out)['capture']['spans']
    assert 'is not readable' in span['error']
    code, out, err = lineage(capfd, 'show', '--version', 2, '--metadata-path', path)
    assert 'capture-manifest.json is not readable' in out


def test_the_manifest_reader_is_the_exports(tmp_path):
    from common import capture_manifest
    result = _export_span(tmp_path / 'data', tmp_path / 'capture', 1)
    assert export.read_manifest(result.directory) == dict(
        result.manifest, path=os.path.join(result.directory, capture_manifest.FILE_NAME))
    assert capture_manifest.read(str(tmp_path)) is None
    (tmp_path / capture_manifest.FILE_NAME).write_text('{"source": "x", "format": 1}')
    assert 'not a capture manifest' in capture_manifest.read(str(tmp_path))['error']
    (tmp_path / capture_manifest.FILE_NAME).write_text(
        '{"source": "production capture", "format": 99}')
    assert 'format 99' in capture_manifest.read(str(tmp_path))['error']
