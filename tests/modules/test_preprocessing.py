"""preprocessing_fn through tf.Transform's in-memory Beam implementation."""
import tempfile

import numpy as np
import pytest

from modules import features
from modules.preprocessing import preprocessing_fn

xf = features.transformed_name


def _row(fare, tips, payment, hour, lat=41.9, company='Flash Cab', area=8):
    """One raw example in tf.Transform's instance-dict format."""
    return {
        'fare': [fare], 'tips': [tips], 'trip_miles': [fare / 3.0], 'trip_seconds': [int(fare * 60)],
        'trip_start_hour': [hour], 'trip_start_day': [3], 'trip_start_month': [5],
        'trip_start_timestamp': [1400000000], 'payment_type': [payment],
        'company': [company] if company else [],
        'pickup_latitude': [lat], 'pickup_longitude': [-87.6],
        'dropoff_latitude': [lat], 'dropoff_longitude': [-87.6],
        'pickup_community_area': [area] if area else [], 'dropoff_community_area': [area] if area else [],
        'pickup_census_tract': [], 'dropoff_census_tract': [],
    }


@pytest.fixture(scope='module')
def transformed(schema):
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata

    rows = [
        _row(10.0, 3.0, 'Credit Card', 8),                  # 30% tip -> big tipper
        _row(20.0, 2.0, 'Credit Card', 9, lat=41.8),        # 10% tip -> not
        _row(30.0, 0.0, 'Cash', 23, lat=42.0, company=''),   # missing company
        _row(40.0, 9.0, 'Cash', 0, lat=41.95, area=None),   # 22.5% -> big tipper; missing area
    ]
    metadata = dataset_metadata.DatasetMetadata(schema)
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
        (data, _), _ = ((rows, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
    return data


def test_label_is_big_tipper_over_20_percent_of_fare(transformed):
    assert [r[xf('big_tipper')] for r in transformed] == [1, 0, 0, 1]


def test_numerics_are_z_scored(transformed):
    fares = np.array([r[xf('fare')] for r in transformed])
    assert fares.mean() == pytest.approx(0.0, abs=1e-6)
    assert fares.std() == pytest.approx(1.0, abs=1e-5)
    assert list(np.argsort(fares)) == [0, 1, 2, 3]  # Order preserved.


def test_categoricals_map_through_vocabulary(transformed):
    payment = [r[xf('payment_type')] for r in transformed]
    assert payment[0] == payment[1] and payment[2] == payment[3] and payment[0] != payment[2]
    assert all(0 <= p < features.VOCAB_SIZE + features.OOV_SIZE for p in payment)


def test_missing_values_are_filled(transformed):
    # Missing community area becomes 0; hours pass through as integers.
    assert transformed[3][xf('pickup_community_area')] == 0
    assert [r[xf('trip_start_hour')] for r in transformed] == [8, 9, 23, 0]


def test_coordinates_are_bucketized(transformed):
    buckets = [r[xf('pickup_latitude')] for r in transformed]
    assert all(0 <= b < features.FEATURE_BUCKET_COUNT for b in buckets)
    # Latitudes 41.8 < 41.9 < 41.95 < 42.0 -> non-decreasing buckets.
    order = [1, 0, 3, 2]
    assert [buckets[i] for i in order] == sorted(buckets[i] for i in order)
