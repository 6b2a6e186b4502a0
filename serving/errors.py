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

    def __init__(self, code, message, http_status=None):
        if code not in HTTP_STATUS:
            raise ValueError('unknown status code %r' % code)
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self):
        """The code's HTTP status from TF Serving's table, unless the error names its own."""
        return self._http_status or HTTP_STATUS[self.code]


def invalid_argument(message):
    return ServingError('INVALID_ARGUMENT', message)


def not_found(message):
    return ServingError('NOT_FOUND', message)


def payload_too_large(message):
    """A request body over the server's size limit: HTTP 413 (Content Too Large).

    No canonical code maps to 413 in TF Serving's table above, but 413 is
    HTTP's status for it and what clients and proxies expect; the body is
    still TF Serving's `{"error": ...}`.
    """
    return ServingError('RESOURCE_EXHAUSTED', message, http_status=413)
