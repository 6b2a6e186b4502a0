"""rollout.training_data: what each staged version was trained on, beside it."""
import json
import os

import pytest

from rollout import staging, training_data
from rollout.errors import RolloutError

MODEL = 'taxi'


def _statistics_dir(root, splits=('train', 'eval'), payload=b'stats'):
    for split in splits:
        os.makedirs(root / ('Split-' + split))
        (root / ('Split-' + split) / 'FeatureStats.pb').write_bytes(payload + split.encode())
    return str(root)


def _data(tmp_path, span='span 1', payload=b'stats'):
    schema = tmp_path / 'schema.pbtxt'
    schema.write_text('feature { name: "x" }\n')
    return training_data.TrainingData(
        statistics_dir=_statistics_dir(tmp_path / ('stats-%s' % payload.decode()), payload=payload),
        schema_file=str(schema), span=span)


def test_write_then_read(tmp_path):
    serving = str(tmp_path / 'serving')
    training_data.write(serving, MODEL, 3, _data(tmp_path))
    staged = training_data.read(serving, MODEL, 3)
    assert (staged.version, staged.span, staged.splits) == (3, 'span 1', ('eval', 'train'))
    with open(staged.statistics_file('train'), 'rb') as f:
        assert f.read() == b'statstrain'
    with open(staged.schema_file) as f:
        assert f.read() == 'feature { name: "x" }\n'
    assert staged.directory == os.path.join(serving, MODEL, 'training-data', '3')


def test_never_staged_reads_as_none(tmp_path):
    assert training_data.read(str(tmp_path), MODEL, 1) is None


def test_a_leftover_of_a_crashed_stage_is_replaced(tmp_path):
    serving = str(tmp_path / 'serving')
    training_data.write(serving, MODEL, 2, _data(tmp_path, 'span 1', b'old'))
    training_data.write(serving, MODEL, 2, _data(tmp_path, 'span 2', b'new'))
    staged = training_data.read(serving, MODEL, 2)
    with open(staged.statistics_file('eval'), 'rb') as f:
        assert (staged.span, f.read()) == ('span 2', b'neweval')


def test_statistics_without_splits_are_refused(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(RolloutError, match='holds no Split-\\*/FeatureStats.pb'):
        training_data.write(str(tmp_path / 'serving'), MODEL, 1, training_data.TrainingData(
            statistics_dir=str(empty), schema_file=None, span='span 1'))
    assert not os.path.exists(training_data.data_dir(str(tmp_path / 'serving'), MODEL, 1))


def test_a_damaged_record_names_the_file_and_the_fix(tmp_path):
    serving = str(tmp_path / 'serving')
    folder = training_data.write(serving, MODEL, 1, _data(tmp_path))
    with open(os.path.join(folder, 'source.json'), 'w') as f:
        json.dump({'format': 'something-else'}, f)
    with pytest.raises(RolloutError, match=r'source.json is not a valid training-data record.*'
                                           r'remove .*training-data/1'):
        training_data.read(serving, MODEL, 1)


def test_the_folder_is_not_a_version_and_leftovers_are_cleaned(tmp_path):
    serving = str(tmp_path / 'serving')
    training_data.write(serving, MODEL, 1, _data(tmp_path))
    leftover = os.path.join(training_data.root(serving, MODEL), '.staging-2-999')
    os.makedirs(leftover)
    assert staging.list_versions(serving, MODEL) == []
    removed = staging.clean_stale_temp_dirs(serving, MODEL)
    assert leftover in removed and not os.path.exists(leftover)
    assert training_data.read(serving, MODEL, 1) is not None


def test_a_stage_that_fails_validation_leaves_no_training_data(tmp_path):
    from tests.kfp.test_baseline import fake_saved_model
    model = str(tmp_path / 'model')
    fake_saved_model(model)
    serving = str(tmp_path / 'serving')

    def refuse(path):
        raise RolloutError('bad model')

    with pytest.raises(RolloutError, match='bad model'):
        staging.stage_model(model, serving, MODEL, validate=refuse,
                            training_data=_data(tmp_path))
    assert training_data.read(serving, MODEL, 1) is None
    assert staging.list_versions(serving, MODEL) == []
