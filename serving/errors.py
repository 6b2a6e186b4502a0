"""Errors with TF Serving's status codes, and how its REST API maps them to HTTP."""

# TF Serving's REST front end maps each canonical status code to one HTTP
# status (model_servers/http_server.cc). Clients written against TF Serving
# branch on these, so we must use the same table.
HTTP_STATUS = {
    'OK': 200,
    'CANCELLED': 499,
    'UNKNOWN': 500,
    'INVALID_ARGUMENT': 400,
    'DEADLINE_EXCEEDED': 504,
    'NOT_FOUND': 404,
    'ALREADY_EXISTS': 409,
    'PERMISSION_DENIED': 403,
    'RESOURCE_EXHAUSTED': 429,
    'FAILED_PRECONDITION': 400,
    'ABORTED': 409,
    'OUT_OF_RANGE': 400,
    'UNIMPLEMENTED': 501,
    'INTERNAL': 500,
    'UNAVAILABLE': 503,
    'DATA_LOSS': 500,
    'UNAUTHENTICATED': 401,
}


class ServingError(Exception):
    """A request failure carrying a canonical status code name and a message.

    The message is what the client sees as `{"error": "<message>"}`.
    """

    def __init__(self, code, message):
        if code not in HTTP_STATUS:
            raise ValueError('unknown status code %r' % code)
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return HTTP_STATUS[self.code]


def invalid_argument(message):
    return ServingError('INVALID_ARGUMENT', message)


def not_found(message):
    return ServingError('NOT_FOUND', message)
