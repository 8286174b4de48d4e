"""The Flask app SageMaker talks to: GET /ping, POST /invocations, GET /execution-parameters.

Every error answer is JSON ({"error": "..."}) with a 4xx status for bad requests; an unexpected
fault is logged with its traceback and answered 500, and the worker goes on serving.
"""

from __future__ import annotations

import logging

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from object2vec.errors import RequestError
from object2vec.record_format import JSONLINES, JSONLINES_ALIASES
from object2vec.retrieval.protocol import CUSTOM_ATTRIBUTES_HEADER, NeighborSource, answer_neighbors, retrieval_params
from object2vec.serving.codec import (
    JSON,
    OutputFormat,
    decode_request,
    encode_response,
    negotiate_accept,
    parse_media_type,
)
from object2vec.serving.predictor import Predictor
from object2vec.serving.settings import ServingConfig

logger = logging.getLogger(__name__)


def create_app(
    predictor: Predictor, config: ServingConfig | None = None, retriever: NeighborSource | None = None
) -> Flask:
    """An app answering with `predictor`, which is already loaded and smoke-tested, and with
    `retriever` (the model's retrieval index, if it has one) when a request asks for top_k."""
    config = config or ServingConfig.from_env()
    app = Flask(__name__)
    # Werkzeug answers 413 for a larger body, declared or streamed (chunked batch payloads).
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes

    @app.get("/ping")
    def ping() -> Response:
        # The model was loaded and smoke-tested before this worker accepted connections.
        return Response(b"", status=200, mimetype="application/json")

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return Response(orjson.dumps(config.execution_parameters()), status=200, mimetype=JSON)

    @app.post("/invocations")
    def invocations() -> Response:
        content_type = request.headers.get("Content-Type")
        output = _output_format(request.headers.get("Accept"), content_type, config)
        decoded = decode_request(_read_body(config), content_type)
        # top_k (Accept parameter or custom attribute): neighbours from the retrieval index.
        asked = retrieval_params(request.headers.get("Accept"), request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        if asked is not None:
            body = answer_neighbors(retriever, decoded, asked, output)
            return Response(body, status=200, mimetype=output.media_type)
        prediction = predictor.predict(
            decoded.instances, decoded.max_seqlens, check_booleans=decoded.may_contain_booleans
        )
        return Response(encode_response(prediction, output), status=200, mimetype=output.media_type)

    @app.errorhandler(RequestError)
    def request_error(err: RequestError) -> Response:
        logger.info("Answered %d: %s", err.status_code, err.message)
        return _error(err.status_code, err.message)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status == 413:
            message = config.too_large_message()
        else:
            message = err.description or err.name
        return _error(status, message)

    @app.errorhandler(Exception)
    def internal_error(err: Exception) -> Response:
        logger.exception("Internal error while answering %s %s", request.method, request.path)
        return _error(500, f"internal error ({type(err).__name__}); see the endpoint's logs")

    return app


def _read_body(config: ServingConfig) -> bytes:
    """The whole request body, or a 4xx: never a silently shortened body.

    Without nginx in front, the body comes straight from gunicorn, which de-chunks
    Transfer-Encoding: chunked itself. A chunked body has no length to check up front, so one
    byte more than the limit is read to tell "exactly at the limit" from "cut at the limit", and
    a body that ends before its Content-Length is an error, not a shorter request. Reading fails
    on malformed chunking (an invalid chunk size, a missing CRLF) or when the client goes away:
    that is the client's fault, answered 400 (408 for a read that timed out).
    """
    limit = config.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestError(413, config.too_large_message())
    stream = request.environ["wsgi.input"]
    try:
        body = stream.read(limit + 1 if declared is None else declared)
    except TimeoutError:
        raise RequestError(408, "the request body did not arrive in time: send it without pauses") from None
    except Exception as err:  # gunicorn's InvalidChunkSize, ChunkMissingTerminator, NoMoreData, ...
        raise RequestError(
            400, f"the request body could not be read ({type(err).__name__}): check its Transfer-Encoding"
        ) from None
    if len(body) > limit:
        raise RequestError(413, config.too_large_message())
    if declared is not None and len(body) < declared:
        raise RequestError(
            400, f"the body ended after {len(body)} of the {declared} bytes its Content-Length announced"
        )
    return body


def _output_format(accept: str | None, content_type: str | None, config: ServingConfig) -> OutputFormat:
    """Negotiate Accept. In batch transform, a JSON Lines request without a specific Accept is
    answered in JSON Lines: one output line per input line is what SplitType=Line jobs assemble
    (the real algorithm does the same); elsewhere the default is application/json."""
    default = config.default_accept
    if config.batch and parse_media_type(content_type)[0] in (JSONLINES, *JSONLINES_ALIASES):
        default = JSONLINES
    return negotiate_accept(accept, default)


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status=status, mimetype=JSON)
