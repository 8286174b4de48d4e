"""nginx in front of gunicorn: the configuration `serve` writes for it, and where nginx is found.

Why nginx (the bring-your-own-container reference design does the same): gunicorn's sync
workers read a request themselves, so a client that sends its headers or body slowly, or stops
half-way, holds a worker until gunicorn's timeout kills it; two such clients were enough to make
/ping wait 65 s. nginx reads every request whole (a chunked body too, de-chunked and given a
Content-Length) before it hands it to gunicorn over a unix socket, and reads gunicorn's answer
whole before it sends it on, so a slow client only ever holds an nginx connection, which costs a
few kilobytes. nginx also enforces the body limit, client timeouts and header limits, and answers
the errors it raises itself in the same JSON shape as the app ({"error": "..."}); the protocol
errors it would answer 501 or 505 (an unknown Transfer-Encoding, HTTP/2.0 on a plain socket) are
the client's, answered 400.

Everything nginx writes (pid, temp files of large bodies) goes to the runtime folder `serve`
makes; it logs errors to stderr and keeps no access log (per-request lines cost latency).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import orjson

from object2vec.serving.settings import NGINX_ENV, ServerSettings, ServingConfig

DEBIAN_NGINX = "/usr/sbin/nginx"  # not on a non-root user's PATH on Debian
CLIENT_TIMEOUT_S = 20  # between two reads of a request's headers or body: slow clients cost nothing else
WORKER_CONNECTIONS = 4096
BODY_BUFFER = "1m"  # larger bodies are buffered in a temp file, not in memory per connection
ERROR_URI = "/__object2vec_error/"

# The errors nginx answers itself, as the app answers its own: (status sent, message).
ERRORS: dict[int, tuple[int, str]] = {
    400: (400, "the request is malformed (its request line, headers or chunked body): send well-formed HTTP/1.1"),
    404: (404, "not found: the paths are /ping, /invocations and /execution-parameters"),
    405: (405, "method not allowed: GET /ping, POST /invocations, GET /execution-parameters"),
    408: (408, "the request did not arrive in time: send it without pauses"),
    411: (411, "the request needs a Content-Length or Transfer-Encoding: chunked"),
    414: (414, "the request URI is too long"),
    494: (431, "the request headers are too large"),
    501: (400, "unsupported Transfer-Encoding: send the body as is, with a Content-Length, or chunked"),
    505: (400, "unsupported HTTP version: use HTTP/1.1 (or 1.0)"),
    500: (500, "internal error in the HTTP front end; see the endpoint's logs"),
    502: (502, "the model server is not answering (starting, or restarting a worker): retry"),
    503: (503, "the model server is not answering (starting, or restarting a worker): retry"),
    504: (504, "the model server did not answer in time"),
}


def find_nginx(env: Mapping[str, str] | None = None) -> str | None:
    """The nginx binary `serve` puts in front of gunicorn, or None to serve without it.

    OBJECT2VEC_NGINX: unset or "auto" -> nginx on PATH, else /usr/sbin/nginx, else None;
    "off" -> None; anything else is the path of the binary to use."""
    env = os.environ if env is None else env
    choice = env.get(NGINX_ENV, "").strip()
    if choice.lower() == "off":
        return None
    if choice and choice.lower() != "auto":
        return choice
    found = shutil.which("nginx")
    if found is None and os.access(DEBIAN_NGINX, os.X_OK):
        found = DEBIAN_NGINX
    return found


def nginx_config(settings: ServerSettings, config: ServingConfig, upstream: Path, runtime_dir: Path) -> str:
    """nginx.conf: listen on settings.port, pass every request to gunicorn on `upstream`."""
    errors = {**ERRORS, 413: (413, config.too_large_message())}
    # Internal URIs rather than named locations: nginx can redirect to a URI even for a request
    # whose request line it could not parse (a named location then gives an HTML 500).
    error_pages = "\n".join(
        f"        error_page {code} {'' if status == code else f'={status} '}{ERROR_URI}{code};"
        for code, (status, _) in errors.items()
    )
    error_locations = "\n".join(
        f"        location = {ERROR_URI}{code} {{\n"
        f"            internal;\n"
        f"            default_type application/json;\n"
        f"            return {status} '{_quoted(orjson.dumps({'error': message}).decode())}';\n"
        f"        }}"
        for code, (status, message) in errors.items()
    )
    # gunicorn kills a worker after settings.timeout_s: nginx waits a little longer, so that a
    # request is answered by the app (or a 502 once its worker was killed), never cut at nginx.
    upstream_timeout = settings.timeout_s + 5
    return f"""# Written by `serve` (object2vec/serving/nginx.py) for this run; edits are not kept.
daemon off;
worker_processes 1;
pid {runtime_dir}/nginx.pid;
error_log stderr error;
worker_shutdown_timeout {settings.graceful_timeout_s + 5}s;

events {{
    worker_connections {WORKER_CONNECTIONS};
}}

http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {runtime_dir}/client_body;
    proxy_temp_path {runtime_dir}/proxy;
    fastcgi_temp_path {runtime_dir}/fastcgi;
    uwsgi_temp_path {runtime_dir}/uwsgi;
    scgi_temp_path {runtime_dir}/scgi;

    client_header_timeout {CLIENT_TIMEOUT_S}s;
    client_body_timeout {CLIENT_TIMEOUT_S}s;
    send_timeout {CLIENT_TIMEOUT_S}s;
    keepalive_timeout 75s;
    client_max_body_size {config.max_body_bytes};
    client_body_buffer_size {BODY_BUFFER};
    large_client_header_buffers 4 16k;

    upstream gunicorn {{
        server unix:{upstream};
    }}

    server {{
        listen {settings.port} default_server;
        # Only the methods the API has; gunicorn would answer some others nginx passes in HTML.
        if ($request_method !~ ^(GET|HEAD|POST)$) {{
            return 405;
        }}

        location / {{
            proxy_pass http://gunicorn;
            proxy_set_header Host $host;
            proxy_redirect off;
            proxy_ignore_client_abort on;  # a client that half-closes (done sending) still gets its answer
            proxy_read_timeout {upstream_timeout}s;
            proxy_send_timeout {upstream_timeout}s;
            proxy_buffer_size 64k;
            proxy_buffers 32 64k;
        }}

{error_pages}
{error_locations}
    }}
}}
"""


def _quoted(text: str) -> str:
    """Text for an nginx single-quoted string: no variables ($) are expanded in ours."""
    if "$" in text:
        raise ValueError(f"an nginx error text must not contain $: {text}")
    return text.replace("\\", "\\\\").replace("'", "\\'")
