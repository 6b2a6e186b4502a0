"""Span ranges (`--span-range A B`, PipelineConfig.span_range): every span A..B
in one Examples artifact that records span=B and span_range="A-B", the same
under LocalDagRunner (SpanRangeDriver) and the compiled KFP/Vertex targets
(the executor resolves what no driver did). Single spans stay stock TFX."""
import csv
import glob
import json
import os

import pytest
from google.protobuf import message

from components.span_example_gen import component as span_component
from components.span_example_gen import driver as span_driver
from components.span_example_gen import executor as span_executor
from components.span_example_gen import resolve
from pipeline import spans
from pipeline.configs import LOCAL_BEAM_ARGS, ConfigError, PipelineConfig
from tests.conftest import DATA_ROOT, SCHEMA_PATH, run_cli_quietly

PATTERN = 'span-{SPAN}/*.csv'
HEADER = ['fare', 'trips', 'company']
# Column `fare` holds integers in span 1 and a float in span 2: read together,
# it must be FLOAT in every example.
SPAN_ROWS = {1: [[10, 1, 'a'], [12, 2, 'b'], [7, 1, '']],
             2: [[8.5, 3, 'c'], [9, 1, 'a']]}


def write_csv(path, rows, header=HEADER):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_span(root, span, rows, header=HEADER):
    return write_csv(os.path.join(str(root), 'span-%s' % span, 'data.csv'), rows, header)


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / 'data'
    for span, rows in SPAN_ROWS.items():
        write_span(root, span, rows)
    return str(root)


def exec_properties(component):
    """The component's exec properties as a launcher hands them to a driver
    (protos are JSON strings already)."""
    props = {k: v for k, v in component.exec_properties.items() if v is not None}
    assert not any(isinstance(v, message.Message) for v in props.values())
    return props


def range_component(root, first=1, last=2, pattern=PATTERN):
    from pipeline import pipeline as pipeline_lib
    config = PipelineConfig(data_root=root, span_pattern=pattern)
    return span_component.CsvExampleGen(
        input_base=root, input_config=pipeline_lib.input_config(config),
        output_config=pipeline_lib.output_config(config), span_range=(first, last))


def run_driver(driver_class, props):
    from tfx.orchestration.portable import data_types
    from tfx.types import standard_artifacts
    info = data_types.ExecutionInfo(exec_properties=dict(props),
                                    output_dict={'examples': [standard_artifacts.Examples()]})
    result = driver_class(None).run(info)
    resolved = {k: getattr(v, v.WhichOneof('value')) for k, v in result.exec_properties.items()}
    (artifact,) = result.output_artifacts['examples'].artifacts
    return resolved, artifact


def custom(artifact, name):
    """An MLMD artifact's custom property, or its property (TFX moves `span`
    into Examples' typed properties when it publishes)."""
    props = artifact.custom_properties if name in artifact.custom_properties else artifact.properties
    value = props[name]
    return getattr(value, value.WhichOneof('value'))


def count_examples(uri):
    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(uri, 'Split-*', '*.gz')))
    assert files, uri
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type='GZIP'))


# ------------------------------------------------------------------ config

def test_a_span_range_is_a_valid_config():
    assert PipelineConfig(span_range=(1, 3)).validate().span_range == (1, 3)
    assert PipelineConfig(span_range=(2, 2)).validate().span is None


@pytest.mark.parametrize('span_range,span,message', [
    ((3, 1), None, r'span_range=\(3, 1\): the first span must not come after the last, e.g. \(1, 3\)'),
    ((1,), None, 'must be two span numbers'),
    ((1, 2, 3), None, 'must be two span numbers'),
    (('1', '2'), None, 'must be two span numbers'),
    ((True, 2), None, 'must be two span numbers'),
    (5, None, 'must be two span numbers'),
    ((-1, 2), None, 'span numbers must be >= 0'),
    ((1, 2), 2, 'either span .* or span_range .*not both'),
])
def test_bad_span_ranges_raise_clear_config_errors(span_range, span, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig(span_range=span_range, span=span).validate()


# ------------------------------------------------------------------ CLI

def test_cli_span_range_cannot_be_combined_with_span(tmp_path, capsys):
    code, _ = run_cli_quietly(['run', '--workspace', str(tmp_path / 'ws'), '--span', '1',
                               '--span-range', '1', '2'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith('error: --span-range cannot be combined with --span')
    assert not (tmp_path / 'ws').exists()


def test_cli_names_every_missing_span_of_the_range_before_anything_runs(data_root, tmp_path, capsys):
    code, _ = run_cli_quietly(['run', '--workspace', str(tmp_path / 'ws'), '--data-root', data_root,
                               '--span-range', '1', '4'])
    err = capsys.readouterr().err
    assert code == 2
    assert 'span range 1-4: spans 3, 4 not found' in err and 'available spans are 1, 2' in err
    assert not (tmp_path / 'ws').exists()


def test_cli_help_explains_span_range(capsys):
    from runners import cli
    assert cli.build_parser().parse_args(['run', '--span-range', '1', '2']).span_range == [1, 2]
    with pytest.raises(SystemExit):
        cli.main(['run', '--help'])
    help_text = ' '.join(capsys.readouterr().out.split())
    assert '--span-range A B' in help_text
    assert 'all spans A..B are ingested as one Examples artifact, split train/eval by hash' in help_text
    assert 'Cannot be combined with --span' in help_text


# ------------------------------------------------------------------ pre-flight

def test_preflight_checks_every_span_of_the_range(data_root):
    files = spans.check_span_range(data_root, PATTERN, 1, 2)
    assert [os.path.relpath(f, data_root) for f in files] == ['span-1/data.csv', 'span-2/data.csv']

    from runners import local_runner
    config, files = local_runner.preflight(PipelineConfig(
        data_root=data_root, schema_path=SCHEMA_PATH, span_range=(1, 2)))
    assert config.span is None and config.span_range == (1, 2) and len(files) == 2


def test_preflight_names_all_missing_spans(tmp_path):
    for span in (1, 2, 5):
        write_span(tmp_path, span, [[1, 1, 'a']])
    with pytest.raises(spans.DataError, match='span range 1-5: spans 3, 4 not found in .*available '
                                              'spans are 1, 2, 5'):
        spans.check_span_range(str(tmp_path), PATTERN, 1, 5)


def test_preflight_names_empty_spans(tmp_path):
    write_span(tmp_path, 1, [[1, 1, 'a']])
    os.makedirs(tmp_path / 'span-2')
    os.makedirs(tmp_path / 'span-3')
    with pytest.raises(spans.DataError, match="spans 2, 3 in .* have no files matching 'span-"):
        spans.check_span_range(str(tmp_path), PATTERN, 1, 3)


def test_preflight_names_an_unreadable_csv_in_any_span(data_root):
    bad = os.path.join(data_root, 'span-2', 'data.csv')
    with open(bad, 'wb') as f:
        f.write(b'\xff\xfe\x00bad')
    with pytest.raises(spans.DataError, match='span-2/data.csv is not a UTF-8'):
        spans.check_span_range(data_root, PATTERN, 1, 2)


def test_preflight_names_a_span_whose_columns_differ(data_root):
    other = write_span(data_root, 2, [[1, 2, 3]], header=['fare', 'company', 'trips'])
    with pytest.raises(spans.DataError, match='%s has a different CSV header' % other):
        spans.check_span_range(data_root, PATTERN, 1, 2)


# ------------------------------------------------------------------ pipeline wiring

def test_a_span_range_swaps_in_the_span_range_example_gen_with_the_stock_node_id():
    from pipeline import pipeline as pipeline_lib
    p = pipeline_lib.create_pipeline(PipelineConfig(workspace='/tmp/ws', span_range=(1, 2)))
    gen = next(c for c in p.components if c.id == 'CsvExampleGen')
    assert type(gen) is span_component.CsvExampleGen
    assert gen.driver_class is span_driver.SpanRangeDriver
    assert gen.executor_spec.executor_class is span_executor.Executor
    assert gen.exec_properties['span_range'] == '1-2'
    assert gen.exec_properties['span_pattern'] == PATTERN
    rc = json.loads(gen.exec_properties['range_config'])
    assert rc == {'static_range': {'start_span_number': 2, 'end_span_number': 2}}


@pytest.mark.parametrize('span', [None, 2])
def test_single_and_latest_span_keep_tfx_s_own_csv_example_gen(span):
    from tfx import v1 as tfx
    from tfx.components.example_gen import driver
    from tfx.components.example_gen.csv_example_gen import executor as csv_executor

    from pipeline import pipeline as pipeline_lib
    p = pipeline_lib.create_pipeline(PipelineConfig(workspace='/tmp/ws', span=span))
    gen = next(c for c in p.components if c.id == 'CsvExampleGen')
    assert type(gen) is tfx.components.CsvExampleGen
    assert gen.driver_class is driver.FileBasedDriver
    assert gen.executor_spec.executor_class is csv_executor.Executor
    assert 'span_range' not in gen.exec_properties


def test_the_component_refuses_a_pattern_without_span_and_a_reversed_range(tmp_path):
    with pytest.raises(ValueError, match='no {SPAN}'):
        range_component(str(tmp_path), pattern='all/*.csv')
    with pytest.raises(ValueError, match=r'span_range \(2, 1\)'):
        range_component(str(tmp_path), 2, 1)


# ------------------------------------------------------------------ driver (LocalDagRunner)

def test_driver_resolves_every_span_and_records_the_newest(data_root):
    props, artifact = run_driver(span_driver.SpanRangeDriver, exec_properties(range_component(data_root)))
    assert props['span'] == 2 and 'version' not in props
    assert json.loads(props['span_range_patterns']) == [[1, 'span-1/*.csv'], [2, 'span-2/*.csv']]
    assert json.loads(props['input_config'])['splits'][0]['pattern'] == 'span-2/*.csv'
    lines = props['input_fingerprint'].splitlines()
    assert lines[0] == 'span 1' and lines[2] == 'span 2'
    assert all(line.startswith('split:single_split,num_files:1,') for line in lines[1::2])
    assert custom(artifact, 'span') == 2 and custom(artifact, 'span_range') == '1-2'
    assert custom(artifact, 'input_fingerprint') == props['input_fingerprint']


def test_the_fingerprint_notices_a_change_in_any_span(data_root):
    props = exec_properties(range_component(data_root))
    before, _ = run_driver(span_driver.SpanRangeDriver, props)
    write_span(data_root, 1, SPAN_ROWS[1] + [[11, 1, 'z']])   # the *older* span changes
    after, _ = run_driver(span_driver.SpanRangeDriver, props)
    assert before['input_fingerprint'] != after['input_fingerprint']
    assert before['input_fingerprint'].split('span 2')[1] == after['input_fingerprint'].split('span 2')[1]


def test_driver_names_every_span_of_the_range_without_files(tmp_path):
    for span in (1, 4):
        write_span(tmp_path, span, [[1, 1, 'a']])
    props = exec_properties(range_component(str(tmp_path), 1, 4))
    with pytest.raises(ValueError, match=r"span range 1-4: no files match 'span-\{SPAN\}/\*.csv' "
                                         r'under .* for span\(s\) 2, 3'):
        run_driver(span_driver.SpanRangeDriver, props)


@pytest.mark.parametrize('span', [None, 1])
def test_without_a_range_the_driver_is_tfx_s_file_based_driver(data_root, span):
    from tfx import v1 as tfx
    from tfx.components.example_gen import driver

    from pipeline import pipeline as pipeline_lib
    config = PipelineConfig(data_root=data_root, span=span)
    stock = tfx.components.CsvExampleGen(
        input_base=data_root, input_config=pipeline_lib.input_config(config),
        output_config=pipeline_lib.output_config(config), range_config=pipeline_lib.range_config(config))
    ours = run_driver(span_driver.SpanRangeDriver, exec_properties(stock))
    theirs = run_driver(driver.FileBasedDriver, exec_properties(stock))
    assert ours == theirs and ours[0]['span'] == (span or 2)


def test_span_specs_with_width_and_version_resolve_through_tfx(tmp_path):
    """{SPAN:2} and {VERSION} are TFX's input processor's business, span by span."""
    for folder in ('span-01/v1', 'span-01/v2', 'span-02/v1'):
        write_csv(str(tmp_path / folder / 'data.csv'), [[1, 1, 'a']])
    props = exec_properties(range_component(str(tmp_path), 1, 2,
                                            pattern='span-{SPAN:2}/v{VERSION}/*.csv'))
    resolved = resolve.resolve_span_range(props)
    assert json.loads(resolved['span_range_patterns']) == [[1, 'span-01/v2/*.csv'],
                                                           [2, 'span-02/v1/*.csv']]
    assert (resolved['span'], resolved['version']) == (2, 1)   # the newest span's version


# ------------------------------------------------------------------ executor

def test_the_read_covers_every_span_with_one_type_per_column(data_root):
    import apache_beam as beam
    from apache_beam.testing import util as beam_util

    def check(examples):
        assert len(examples) == sum(len(r) for r in SPAN_ROWS.values())
        for example in examples:
            fare = example.features.feature['fare']
            assert fare.WhichOneof('kind') == 'float_list', example
        assert sorted(e.features.feature['fare'].float_list.value[0] for e in examples) == \
            [7.0, 8.5, 9.0, 10.0, 12.0]

    with beam.Pipeline(argv=list(LOCAL_BEAM_ARGS)) as p:
        examples = p | span_executor.SpanRangeCsvToExample(
            data_root, [[1, 'span-1/*.csv'], [2, 'span-2/*.csv']])
        beam_util.assert_that(examples | beam.combiners.ToList(), lambda lists: check(lists[0]))


def run_executor(props, tmp_path):
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / 'examples')
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=list(LOCAL_BEAM_ARGS),
                                                 tmp_dir=str(tmp_path / 'tmp') + '/')
    span_executor.Executor(context).Do({}, {'examples': [examples]}, dict(props))
    return examples


@pytest.mark.parametrize('path', ['open-source KFP: no driver', "Vertex: TFX's driver hook"])
def test_the_executor_reads_the_whole_range_where_no_span_range_driver_ran(data_root, tmp_path, path):
    props = exec_properties(range_component(data_root))
    if path.startswith('Vertex'):
        # The hook Vertex runs: TFX's stock resolution of range_config (span 2 only).
        props = resolve.resolve_span(props)
        assert props['span'] == 2 and 'span 1' not in props['input_fingerprint']
    examples = run_executor(props, tmp_path)
    assert count_examples(examples.uri) == sum(len(r) for r in SPAN_ROWS.values())
    assert examples.get_custom_property('span') == 2
    assert examples.get_custom_property('span_range') == '1-2'
    fingerprint = examples.get_custom_property('input_fingerprint')
    assert 'span 1\n' in fingerprint and 'span 2\n' in fingerprint
    assert sorted(json.loads(examples.split_names)) == ['eval', 'train']


def test_the_executor_still_resolves_a_single_span_without_a_driver(data_root, tmp_path):
    from tfx import v1 as tfx

    from pipeline import pipeline as pipeline_lib
    config = PipelineConfig(data_root=data_root)
    stock = tfx.components.CsvExampleGen(
        input_base=data_root, input_config=pipeline_lib.input_config(config),
        output_config=pipeline_lib.output_config(config))
    examples = run_executor(exec_properties(stock), tmp_path)
    assert count_examples(examples.uri) == len(SPAN_ROWS[2])   # the latest span only
    assert examples.get_custom_property('span') == 2
    assert not examples.has_custom_property('span_range')


# ------------------------------------------------------------------ local cache (LocalDagRunner)

def test_local_cache_hits_an_unchanged_range_and_misses_after_any_span_changes(data_root, tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx
    from tfx.orchestration import metadata

    connection = metadata.sqlite_metadata_connection_config(str(tmp_path / 'metadata.sqlite'))

    def run_once():
        pipeline = tfx.dsl.Pipeline(
            pipeline_name='span-range-cache', pipeline_root=str(tmp_path / 'root'),
            components=[range_component(data_root)], enable_cache=True,
            metadata_connection_config=connection, beam_pipeline_args=list(LOCAL_BEAM_ARGS))
        tfx.orchestration.LocalDagRunner().run(pipeline)
        store = metadata_store.MetadataStore(connection)
        execution = max(store.get_executions(), key=lambda e: e.id)
        events = store.get_events_by_execution_ids([execution.id])
        (artifact,) = store.get_artifacts_by_id(
            [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT])
        return execution.last_known_state, artifact

    complete, cached = metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED
    state, first = run_once()
    assert state == complete
    assert (custom(first, 'span'), custom(first, 'span_range')) == (2, '1-2')
    assert count_examples(first.uri) == 5
    state, again = run_once()
    assert state == cached and again.id == first.id
    write_span(data_root, 1, SPAN_ROWS[1] + [[11, 1, 'z']])   # only the older span changes
    state, changed = run_once()
    assert state == complete and changed.id != first.id
    assert count_examples(changed.uri) == 6


# ------------------------------------------------------------------ compiled targets

def test_kfp_and_vertex_compile_a_span_range_without_resolvers(tmp_path):
    from runners import kfp_spec, kubeflow_runner
    from tests.kfp.conftest import kfp_config, vertex_config

    def example_gen_container(spec):
        return kfp_spec.containers(spec)[kfp_spec.task_executor_label(spec, 'CsvExampleGen')]

    config = PipelineConfig(span_range=(1, 2))
    kfp = kubeflow_runner.compile_pipeline(config, kfp_config(), str(tmp_path / 'p.yaml')).pipeline_spec
    assert kfp_spec.non_kfp_executors(kfp) == []
    args = example_gen_container(kfp)['args']
    assert args[args.index('--executor_class_path') + 1] == \
        'components.span_example_gen.executor.Executor'
    params = kfp['root']['dag']['tasks']['CsvExampleGen']['inputs']['parameters']
    assert params['span_range']['runtimeValue']['constant'] == '1-2'
    assert params['span_pattern']['runtimeValue']['constant'] == PATTERN
    assert params['input_base'] == {'componentInputParameter': 'data_root'}
    # No driver on KFP, so no input fingerprint in the cache key: never cached.
    assert kfp['root']['dag']['tasks']['CsvExampleGen']['cachingOptions'] == {'enableCache': False}

    vertex = kubeflow_runner.compile_pipeline(config, vertex_config(), str(tmp_path / 'p.json')).pipeline_spec
    container = example_gen_container(vertex)
    assert 'lifecycle' in container   # TFX's driver hook resolves span 2; the executor the rest.
    assert container['args'][container['args'].index('--executor_class_path') + 1] == \
        'components.span_example_gen.executor.Executor'


# ------------------------------------------------------------------ summary

def test_summary_shows_the_range_as_the_span_used():
    from runners.summary import RunSummary
    common = dict(blessed=True, metrics={}, baseline_metrics={}, baseline_uri=None, pushed=False,
                  pushed_destination=None, model_uri=None, seconds=1.0)
    assert 'span used      : 1-2\n' in RunSummary(span=2, span_range='1-2', **common).format()
    assert 'span used      : 2\n' in RunSummary(span=2, **common).format()


# ------------------------------------------------------------------ end to end

@pytest.mark.e2e
def test_a_real_run_on_a_span_range_trains_on_both_spans(tmp_path):
    rows_per_span = 300
    root = tmp_path / 'data'
    for span in (1, 2):
        with open(os.path.join(DATA_ROOT, 'span-%d' % span, 'data.csv'), newline='') as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = [row for _, row in zip(range(rows_per_span), reader)]
        write_span(root, span, rows, header=header)
    ws = tmp_path / 'workspace'
    code, out = run_cli_quietly(['run', '--workspace', str(ws), '--data-root', str(root),
                                 '--span-range', '1', '2', '--train-steps', '20', '--eval-steps', '5'])
    assert code == 0, out
    assert 'on spans 1-2 (span-1/data.csv, span-2/data.csv)' in out
    assert 'span used      : 1-2' in out

    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(str(ws / 'metadata.sqlite')))
    (examples,) = [a for a in store.get_artifacts_by_type('Examples')
                   if '/CsvExampleGen/' in a.uri]   # (Transform writes Examples too)
    assert (custom(examples, 'span'), custom(examples, 'span_range')) == (2, '1-2')
    assert count_examples(examples.uri) == 2 * rows_per_span
