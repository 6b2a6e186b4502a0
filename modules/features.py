"""Feature lists and keys for the taxi model: the one place that names columns.

Raw column names are the CSV header; the transformed name of feature `x` is
`x_xf`. Both `preprocessing.py` and `model.py` read these lists, so adding a
feature is a one-line change here.
"""

# Numeric features z-scored by Transform.
DENSE_FLOAT_FEATURE_KEYS = ['trip_miles', 'fare', 'trip_seconds']

# Coordinates bucketized into quantile buckets by Transform.
BUCKET_FEATURE_KEYS = [
    'pickup_latitude', 'pickup_longitude', 'dropoff_latitude', 'dropoff_longitude',
]
FEATURE_BUCKET_COUNT = 10

# Integer categoricals used as-is, with the number of values each can take.
CATEGORICAL_NUMERICAL_FEATURE_KEYS = [
    'trip_start_hour', 'trip_start_day', 'trip_start_month',
    'pickup_community_area', 'dropoff_community_area',
]
# Max value + 1 (0 is the fill for missing community areas).
CATEGORICAL_NUMERICAL_FEATURE_MAX = [24, 8, 13, 78, 78]

# String categoricals mapped through a vocabulary computed by Transform.
CATEGORICAL_STRING_FEATURE_KEYS = ['payment_type', 'company']
VOCAB_SIZE = 100            # Top-k kept per vocabulary ...
OOV_SIZE = 10               # ... plus hashed out-of-vocabulary buckets.

# The label: did the rider tip more than 20% of the fare ("big tipper")?
FARE_KEY = 'fare'
TIPS_KEY = 'tips'
LABEL_KEY = 'big_tipper'
BIG_TIP_FRACTION = 0.2

RAW_FEATURE_KEYS = (DENSE_FLOAT_FEATURE_KEYS + BUCKET_FEATURE_KEYS +
                    CATEGORICAL_NUMERICAL_FEATURE_KEYS + CATEGORICAL_STRING_FEATURE_KEYS)


def transformed_name(key):
    return key + '_xf'
