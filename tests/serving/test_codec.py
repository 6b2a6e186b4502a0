"""TF Serving's REST JSON formats, without a server or a model (fast)."""
import base64
import json

import numpy as np
import pytest

from serving import codec
from serving.errors import ServingError

SPECS = {
    'fare': codec.InputSpec('fare', 'DT_FLOAT', (None,)),
    'trip_start_hour': codec.InputSpec('trip_start_hour', 'DT_INT64', (None,)),
    'company': codec.InputSpec('company', 'DT_STRING', (None,)),
}
EXAMPLES = {'examples': codec.InputSpec('examples', 'DT_STRING', (None,))}


def _decode(body, specs=SPECS):
    return codec.decode_inputs(codec.parse_request(json.dumps(body).encode()), specs)


def _error(body, specs=SPECS, raw=None):
    with pytest.raises(ServingError) as e:
        if raw is not None:
            codec.decode_inputs(codec.parse_request(raw), specs)
        else:
            _decode(body, specs)
    return e.value


def test_row_format_batches_instances_per_input():
    arrays = _decode({'instances': [
        {'fare': 7, 'trip_start_hour': 18, 'company': 'Flash Cab'},
        {'fare': 12.5, 'trip_start_hour': 0, 'company': ''}]})
    assert arrays['fare'].dtype == np.float32 and arrays['fare'].tolist() == [7.0, 12.5]
    assert arrays['trip_start_hour'].dtype == np.int64
    assert arrays['company'].tolist() == [b'Flash Cab', b'']


def test_columnar_format_and_signature_name():
    request = codec.parse_request(json.dumps({
        'signature_name': 'predict_raw',
        'inputs': {'fare': [1.5, 2], 'trip_start_hour': [1, 2], 'company': ['a', 'b'],
                   'ignored_by_tf_serving': 1}}).encode())
    assert request.signature_name == 'predict_raw' and request.format == codec.COLUMNAR
    arrays = codec.decode_inputs(request, SPECS)
    assert arrays['fare'].tolist() == [1.5, 2.0]


def test_default_signature_and_b64_strings():
    request = codec.parse_request(b'{"instances": [{"b64": "aGVsbG8="}, {"b64": ""}]}')
    assert request.signature_name == 'serving_default'
    assert codec.decode_inputs(request, EXAMPLES)['examples'].tolist() == [b'hello', b'']
    # A single-input signature also takes a plain list in columnar form.
    payload = base64.b64encode(b'\x00\xff').decode()
    arrays = _decode({'inputs': [{'b64': payload}]}, EXAMPLES)
    assert arrays['examples'].tolist() == [b'\x00\xff']


@pytest.mark.parametrize('value, expected', [
    ('"abc"', 'JSON Value: "abc" Type: String is not of expected type: float'),
    ('true', 'Type: True is not of expected type: float'),
    ('null', 'Type: Null is not of expected type: float'),
])
def test_wrong_type_for_a_float(value, expected):
    raw = ('{"instances": [{"fare": %s, "trip_start_hour": 1, "company": "x"}]}'
           % value).encode()
    error = _error(None, raw=raw)
    assert error.http_status == 400 and error.code == 'INVALID_ARGUMENT'
    assert "Failed to process element: 0 key: fare of 'instances' list" in error.message
    assert expected in error.message


def test_a_decimal_is_not_an_int64_and_strings_are_not_numbers():
    error = _error({'instances': [{'fare': 1, 'trip_start_hour': 18.5, 'company': 'x'}]})
    assert 'is not of expected type: int64' in error.message
    error = _error({'instances': [{'fare': 1, 'trip_start_hour': 18.0, 'company': 'x'}]})
    assert 'is not of expected type: int64' in error.message
    error = _error({'instances': [{'fare': 1, 'trip_start_hour': 1, 'company': 7}]})
    assert 'is not of expected type: string' in error.message


def test_missing_extra_and_inconsistent_keys():
    error = _error({'instances': [{'fare': 1, 'trip_start_hour': 1}]})
    assert 'keys must be equal to: company,fare,trip_start_hour' in error.message
    error = _error({'instances': [{'fare': 1, 'trip_start_hour': 1, 'company': 'x', 'tips': 2}]})
    assert 'does not have named input: tips' in error.message
    error = _error({'inputs': {'fare': [1], 'trip_start_hour': [1]}})
    assert error.message == "Missing named input: company in 'inputs' object."
    error = _error({'instances': [1, 2]})
    assert 'instances is a plain list' in error.message


def test_envelope_errors():
    assert _error(None, raw=b'').message == 'JSON Parse error: The document is empty'
    assert _error(None, raw=b'{"instances": [1,').message.startswith('JSON Parse error:')
    assert 'Is not object' in _error(None, raw=b'[1, 2]').message
    assert _error({'signature_name': 'x'}).message == "Missing 'inputs' or 'instances' key"
    assert 'only one of' in _error({'instances': [1], 'inputs': [1]}).message
    assert "No values in 'instances'" in _error({'instances': []}).message
    assert "'signature_name' key must be a string" in _error(
        {'signature_name': 3, 'instances': [1]}).message


def test_shapes_are_checked_against_the_signature():
    error = _error({'instances': [{'fare': [1, 2], 'trip_start_hour': 1, 'company': 'x'}]})
    assert 'input fare has shape [1,2] but signature expects [-1]' in error.message
    error = _error({'inputs': {'fare': [[1], [2, 3]], 'trip_start_hour': [1, 2],
                               'company': ['a', 'b']}})
    assert 'Encountered list at unexpected size' in error.message
    assert 'Unable to base64 decode' in _error({'instances': [{'b64': '***'}]}, EXAMPLES).message


def test_float_precision_checks():
    error = _error({'instances': [{'fare': 2 ** 40, 'trip_start_hour': 1, 'company': 'x'}]})
    assert 'without loss of precision' in error.message
    error = _error({'instances': [{'fare': 1, 'trip_start_hour': 2 ** 64, 'company': 'x'}]})
    assert 'int64' in error.message
    arrays = _decode({'instances': [{'fare': float('nan'), 'trip_start_hour': 1,
                                     'company': 'x'}]})
    assert np.isnan(arrays['fare'][0])


def test_outputs_row_and_columnar_like_tf_serving():
    outputs = {'probabilities': np.array([[0.48522615], [0.2]], dtype=np.float32)}
    # float32 values print as their shortest text, not the float64 widening.
    assert codec.dumps(codec.encode_outputs(outputs, codec.ROW)) == \
        '{"predictions":[[0.48522615],[0.2]]}'
    assert codec.encode_outputs(outputs, codec.COLUMNAR) == {'outputs': [[0.48522615], [0.2]]}
    two = {'b': np.array([1, 2]), 'a_bytes': np.array([b'\x00', b'z'], dtype=object)}
    assert codec.encode_outputs(two, codec.ROW) == {'predictions': [
        {'a_bytes': {'b64': 'AA=='}, 'b': 1}, {'a_bytes': {'b64': 'eg=='}, 'b': 2}]}
    assert codec.encode_outputs(two, codec.COLUMNAR) == {'outputs': {
        'a_bytes': [{'b64': 'AA=='}, {'b64': 'eg=='}], 'b': [1, 2]}}
    with pytest.raises(ServingError):
        codec.encode_outputs({'a': np.array([1, 2]), 'b': np.array([1])}, codec.ROW)


def test_error_body_is_tf_serving_shaped():
    assert json.loads(codec.error_body('Servable not found')) == {'error': 'Servable not found'}


def test_tensorflow_error_messages_lose_the_eager_noise():
    from serving.models import tf_error_message
    raw = ('Graph execution error:\n\nDetected at node ParseExample defined at (most recent '
           'call last):\n<stack traces unavailable>\nName: <unknown>, Feature: fare is required '
           'but could not be found.\n\t [[{{node ParseExample/ParseExampleV2}}]] '
           '[Op:__inference_signature_wrapper_2615]')
    assert tf_error_message(raw) == 'Name: <unknown>, Feature: fare is required but could ' \
                                    'not be found.'
