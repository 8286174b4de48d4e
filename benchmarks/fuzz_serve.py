"""Hostile input against the real `serve`: generated requests, raw-socket cases and slow clients.

Every request goes over a raw socket (so nothing is "fixed up" by an HTTP library) and every
answer is checked against three invariants:
  1. never a 5xx;
  2. a 4xx has a JSON body with a non-empty "error";
  3. a 200 from /invocations has exactly as many answers as the body had records, counted by an
     independent reference (Python's json module, one record per non-blank JSON Lines line): so a
     silently truncated or shifted answer is caught.
The requests: valid JSON and JSON Lines bodies sent whole, chunked (random chunk sizes and
extensions), slowly or pipelined; the same bodies with 1-3 random byte mutations; wrong types
(nested, ragged, null, huge or negative ids, deep nesting, mixed modes); odd charsets,
Content-Types, Accepts and parameters; bodies over the limit (declared and chunked); and raw
protocol cases (invalid chunk sizes, partial headers then close, bodies shorter than their
Content-Length, CL+TE, duplicate lengths, bad request lines, TLS and HTTP/2 prefaces, huge
headers and URIs, bare LF, unknown methods and transfer codings).

Then --slow-clients connections that send part of a request and stall (partial headers, headers
and part of a body, one byte per second) stay open while /ping is timed (target: < 2 s).

    PYTHONPATH=container python benchmarks/fuzz_serve.py [--requests 10000] [--slow-clients 10]
        [--url http://127.0.0.1:8080] [--no-nginx] [--seed 0] [--json-out report.json]

Without --url it saves a small random model and starts `serve` on a free port (nginx in front
when installed, or --no-nginx). Exit status 1 when an invariant was broken or /ping was slow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

logger = logging.getLogger("fuzz_serve")

VOCAB0, VOCAB1, MAX_LEN = 300, 100, 20
HYPERPARAMETERS = {
    "enc0_network": "pooled_embedding",
    "enc0_vocab_size": VOCAB0,
    "enc0_max_seq_len": MAX_LEN,
    "enc0_token_embedding_dim": 8,
    "enc1_network": "hcnn",
    "enc1_vocab_size": VOCAB1,
    "enc1_max_seq_len": MAX_LEN,
    "enc1_token_embedding_dim": 8,
    "enc_dim": 8,
    "mlp_dim": 8,
    "mlp_layers": 1,
    "output_layer": "softmax",
    "num_classes": 3,
}
LIMIT = 6 * 2**20  # the real-time body limit of the server under test
PING_TARGET_S = 2.0
READ_TIMEOUT_S = 30.0
JSON, JSONLINES = "application/json", "application/jsonlines"
BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass
class Request:
    """One HTTP request as bytes, and what the reference says a 200 must hold."""

    wire: bytes
    path: str
    records: int | None  # None: not a well-formed body, so a 200 would be wrong


@dataclass
class Case:
    kind: str
    requests: list[Request]
    pieces: list[tuple[bytes, float]] = field(default_factory=list)  # raw sends and pauses
    answers_required: bool = True  # False: the client hangs up early, no answer is owed
    half_close: bool = False  # shut the write side after sending (a client that is done)


def http_request(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", chunks: list[bytes] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: fuzz"]
    lines += [f"{name}: {value}" for name, value in headers]
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload


def reference_records(body: bytes, content_type: str) -> int | None:
    """How many records a correct server answers for this body (None: it must not answer 200)."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = "utf-8"
    for part in params.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
    try:
        text = body.decode(charset)
    except (LookupError, UnicodeError, ValueError):
        return None
    text = text.removeprefix("\ufeff")
    try:
        if media == JSON:
            document = json.loads(text, parse_constant=_reject)
            instances = document.get("instances") if isinstance(document, dict) else None
            return len(instances) if isinstance(instances, list) else None
        if media in (JSONLINES, "application/jsonl", "application/x-jsonlines", "application/json-lines"):
            lines = [line for line in text.encode("utf-8").splitlines() if line.strip()]
            for line in lines:
                json.loads(line.decode("utf-8"), parse_constant=_reject)
            return len(lines)
    except (ValueError, RecursionError, UnicodeError):
        return None
    return None


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- bodies -------------------------------------------------------------------------------

    def ids(self, vocab: int) -> list[int]:
        return [self.rng.randrange(vocab) for _ in range(self.rng.randrange(0, MAX_LEN + 10))]

    def instances(self) -> list[dict[str, Any]]:
        mode = self.rng.choice(["pair", "pair", "in0", "in1"])
        out = []
        for _ in range(self.rng.choice([0, 1, 1, 2, 5, 20, 60])):
            record: dict[str, Any] = {}
            if mode in ("pair", "in0"):
                record["in0"] = self.ids(VOCAB0)
            if mode in ("pair", "in1"):
                record["in1"] = self.ids(VOCAB1)
            if self.rng.random() < 0.2:
                record["label"] = self.rng.randrange(3)
            out.append(record)
        return out

    def hostile_value(self, depth: int = 0) -> Any:
        choice = self.rng.randrange(14)
        if choice == 0:
            return None
        if choice == 1:
            return self.rng.choice([True, False])
        if choice == 2:
            return self.rng.choice([-1, -(2**63), 2**63, 2**64, 2**64 + 1, 10**30, VOCAB0, VOCAB1, 0])
        if choice == 3:
            return self.rng.choice([1.5, -0.0, 1e300, 3.0])
        if choice == 4:
            return self.rng.choice(["1", "", "in0", "\u00e9\u4e2d", "\\u0000"])
        if choice == 5 and depth < 3:
            return [self.hostile_value(depth + 1) for _ in range(self.rng.randrange(4))]
        if choice == 6:
            nested: Any = [1]
            for _ in range(self.rng.choice([2, 63, 65, 200, 800])):  # json.dumps recurses: deeper ones below
                nested = [nested]
            return nested
        if choice == 7 and depth < 3:
            return {"in0": self.hostile_value(depth + 1)}
        return self.rng.randrange(VOCAB1)

    def hostile_instances(self) -> list[Any]:
        out: list[Any] = self.instances() or [{"in0": [1]}]
        index = self.rng.randrange(len(out))
        kind = self.rng.randrange(6)
        if kind == 0 and isinstance(out[index], dict):  # a bad id inside a list
            key = self.rng.choice(list(out[index]) or ["in0"])
            ids = out[index].get(key) if isinstance(out[index].get(key), list) else []
            ids.insert(self.rng.randrange(len(ids) + 1), self.hostile_value())
            out[index][key] = ids
        elif kind == 1 and isinstance(out[index], dict):  # the field itself is wrong
            out[index][self.rng.choice(["in0", "in1"])] = self.hostile_value()
        elif kind == 2:  # the instance is not an object
            out[index] = self.hostile_value()
        elif kind == 3:  # mixed modes / missing keys
            out.append(self.rng.choice([{"in0": [1]}, {"in1": [1]}, {"in0": [1], "in1": [2]}, {}, {"x": [1]}]))
        elif kind == 4:  # a sequence over 100,000 ids
            out[index] = {"in0": [1] * 100_001}
        else:
            out = [{"in0": []}] * self.rng.choice([1000, 30_000])
        return out

    def body(self, instances: list[Any], media: str) -> bytes:
        if media == JSON:
            return json.dumps({"instances": instances}, separators=(",", ":")).encode()
        lines = [json.dumps(instance, separators=(",", ":")).encode() for instance in instances]
        joined = []
        for line in lines:
            if self.rng.random() < 0.1:
                joined.append(self.rng.choice([b"", b"   ", b"\t"]))
            joined.append(line)
        newline = self.rng.choice([b"\n", b"\n", b"\r\n"])
        return newline.join(joined) + (newline if self.rng.random() < 0.8 else b"")

    def mutate(self, body: bytes) -> bytes:
        data = bytearray(body)
        tokens = [b"[", b"]", b"{", b"}", b",", b"\n", b"\r\n", b'"', b"\\", b"null", b"true", b"1e400", b"NaN",
                  b"-0", b"18446744073709551616", b"\xff", b"\xc3", b"\x00", b" ", b"[" * 100, b"]" * 100,
                  b'{"in0":[1]},', b'{"in0":[1]}\n{"in1"', BOM]  # fmt: skip
        for _ in range(self.rng.randint(1, 3)):
            position = self.rng.randrange(len(data) + 1)
            operation = self.rng.randrange(5)
            if operation == 0 and data:
                data[min(position, len(data) - 1)] = self.rng.randrange(256)
            elif operation == 1:
                data[position:position] = self.rng.choice(tokens)
            elif operation == 2:
                del data[position : position + self.rng.randint(1, 20)]
            elif operation == 3:
                end = min(len(data), position + self.rng.randint(1, 40))
                data[position:position] = data[position:end]
            else:
                del data[position:]
        return bytes(data)

    def content_type(self, media: str) -> str:
        variants = [media] * 6 + [
            f"{media}; charset=utf-8",
            f"{media.upper()}; Charset=UTF-8",
            f"{media}; charset=undefined",
            f"{media}; charset=idna",
            f"{media}; charset=punycode",
            f"{media}; charset=base64",
            f"{media}; charset=klingon",
            f"{media}; charset=",
            f'{media}; charset="latin-1"',
            f"{media}; infer_max_seqlens=5,5",
            f"{media}; infer_max_seqlens=0,9",
            f"{media}; infer_max_seqlens=a,b,c",
            f"{media};;;=;",
            "application/jsonl" if media == JSONLINES else media,
            "text/csv",
            "",
            "application/json-seq",
            "*/*",
            "x" * 3000,
        ]
        return self.rng.choice(variants)

    def accept(self) -> str | None:
        return self.rng.choice(
            [
                None,
                None,
                JSON,
                JSONLINES,
                "*/*",
                f"{JSON};verbose=true",
                f"{JSONLINES}; verbose=True",
                "text/csv",
                "application/json;q=0",
                "text/html, */*;q=0.1",
                "application/*",
                ";;;",
                "q=abc",
                f"{JSONLINES};q=nan, {JSON};q=0.5",
            ]  # fmt: skip
        )

    # -- cases ---------------------------------------------------------------------------------

    def invocation(self, kind: str) -> Case:
        media = self.rng.choice([JSON, JSONLINES])
        if kind == "hostile_types" and self.rng.random() < 0.05:  # deeper than orjson's 1024 levels, or just below
            depth = self.rng.choice([1023, 1100, 5000])
            record = b'{"in0":' + b"[" * depth + b"1" + b"]" * depth + b"}"
            body = b'{"instances":[' + record + b"]}" if media == JSON else record + b"\n"
        elif kind == "hostile_types":
            body = self.body(self.hostile_instances(), media)
        else:
            body = self.body(self.instances(), media)
        content_type = media
        if kind == "mutated":
            body = self.mutate(body)
        elif kind == "odd_headers":
            content_type = self.content_type(media)
            if self.rng.random() < 0.3:  # a body really in another charset, named as such
                charset = self.rng.choice(["utf-16", "latin-1", "utf-32", "cp1252"])
                body = body.decode("utf-8").encode(charset)
                content_type = f"{media}; charset={charset}"
        headers = [("Content-Type", content_type)] if content_type else []
        accept = self.accept() if kind == "odd_headers" else self.rng.choice([None, JSON, JSONLINES])
        if accept is not None:
            headers.append(("Accept", accept))
        records = reference_records(body, content_type)
        if kind == "chunked":
            chunks, position = [], 0
            while position < len(body):
                size = self.rng.choice([1, 7, 100, 4096, 65536])
                chunks.append(body[position : position + size])
                position += size
            wire = http_request("POST", "/invocations", headers, chunks=chunks)
        else:
            wire = http_request("POST", "/invocations", headers, body)
        request = Request(wire, "/invocations", records)
        if kind == "slow_body":
            cut = sorted(self.rng.sample(range(1, len(wire)), k=min(4, len(wire) - 1)))
            pieces = [(piece, 0.05) for piece in _split(wire, cut)]
            return Case(kind, [request], pieces)
        return Case(kind, [request], [(wire, 0.0)])

    def oversized(self) -> Case:
        line = b'{"in0":[1]}\n'
        body = line * (LIMIT // len(line) + self.rng.randint(1, 1000))  # just over the limit
        headers = [("Content-Type", JSONLINES), ("Accept", JSONLINES)]
        if self.rng.random() < 0.5:
            wire = http_request(
                "POST", "/invocations", headers, chunks=[body[i : i + 65536] for i in range(0, len(body), 65536)]
            )
            kind = "oversized_chunked"
        else:
            wire = http_request("POST", "/invocations", headers, body)
            kind = "oversized"
        return Case(kind, [Request(wire, "/invocations", None)], [(wire, 0.0)])

    def pipelined(self) -> Case:
        requests = []
        for _ in range(self.rng.randint(2, 4)):
            which = self.rng.randrange(3)
            if which == 0:
                requests.append(Request(b"GET /ping HTTP/1.1\r\nHost: fuzz\r\n\r\n", "/ping", None))
            elif which == 1:
                requests.append(Request(b"GET /execution-parameters HTTP/1.1\r\nHost: fuzz\r\n\r\n", "/x", None))
            else:
                case = self.invocation("valid")
                requests.append(case.requests[0])
        wire = b"".join(request.wire for request in requests)
        return Case("pipelined", requests, [(wire, 0.0)])

    def raw(self) -> Case:
        ping = b"GET /ping HTTP/1.1\r\nHost: fuzz\r\n\r\n"
        head = b"POST /invocations HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
        body = b'{"instances":[{"in0":[1,2],"in1":[3]}]}'
        cases: list[tuple[str, bytes, bool, bool]] = [  # kind, bytes, an answer is owed, half-close
            ("invalid_chunk_size", head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", True, True),
            ("huge_chunk_size", head + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n", True, True),
            ("chunk_without_crlf", head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcdefgh0\r\n\r\n", True, True),
            ("chunked_cut_short", head + b"Transfer-Encoding: chunked\r\n\r\n100\r\n" + body, False, True),
            ("partial_headers_then_close", head[:30], False, True),
            ("body_shorter_than_length", head + b"Content-Length: 500\r\n\r\n" + body, False, True),
            ("body_longer_than_length", head + b"Content-Length: 10\r\n\r\n" + body, True, True),
            ("cl_and_te", head + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", True, True),
            ("two_lengths", head + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", True, True),
            ("negative_length", head + b"Content-Length: -1\r\n\r\n", True, True),
            ("te_gzip", head + b"Transfer-Encoding: gzip\r\n\r\n" + body, True, True),
            ("te_list", head + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", True, True),
            ("garbage_line", b"GARBAGE\r\n\r\n", True, True),
            ("http_9", b"GET /ping HTTP/9.9\r\nHost: fuzz\r\n\r\n", True, True),
            ("http2_on_plain", b"GET /ping HTTP/2.0\r\nHost: fuzz\r\n\r\n", True, True),
            ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True, True),
            (
                "tls_hello",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
                False,
                True,
            ),
            ("huge_header", b"GET /ping HTTP/1.1\r\nHost: fuzz\r\nX-A: " + b"a" * 40_000 + b"\r\n\r\n", True, True),
            ("many_headers", b"GET /ping HTTP/1.1\r\nHost: fuzz\r\n" + b"X-A: b\r\n" * 500 + b"\r\n", True, True),
            ("huge_uri", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: fuzz\r\n\r\n", True, True),
            ("bare_lf", b"GET /ping HTTP/1.1\nHost: fuzz\n\n", True, True),
            ("nul_in_header", b"GET /ping HTTP/1.1\r\nHost: fuzz\r\nX-A: a\x00b\r\n\r\n", True, True),
            ("obs_fold", b"GET /ping HTTP/1.1\r\nHost: fuzz\r\nX-A: a\r\n b\r\n\r\n", True, True),
            ("space_before_colon", b"GET /ping HTTP/1.1\r\nHost : fuzz\r\n\r\n", True, True),
            (
                "http10_no_host",
                b"POST /invocations HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body),
                True,
                True,
            ),  # fmt: skip
            (
                "expect_continue",
                head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
                True,
                True,
            ),  # fmt: skip
            ("absolute_uri", b"GET http://fuzz/ping HTTP/1.1\r\nHost: fuzz\r\n\r\n", True, True),
            ("odd_path", b"GET /%2e%2e/%ff/\xc3\xa9?a=%00 HTTP/1.1\r\nHost: fuzz\r\n\r\n", True, True),
            ("method_put", b"PUT /invocations HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 0\r\n\r\n", True, True),
            ("method_trace", b"TRACE /ping HTTP/1.1\r\nHost: fuzz\r\n\r\n", True, True),
            ("method_head", b"HEAD /ping HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n", False, True),
            ("lowercase_method", b"get /ping HTTP/1.1\r\nHost: fuzz\r\n\r\n", True, True),
            (
                "odd_method",
                self.rng.choice([b"M-SEARCH", b"PROPFIND", b"X_Y", b"A", b"GET1", b"OPTIONS"])
                + b" /invocations HTTP/1.1\r\nHost: fuzz\r\n\r\n",
                True,
                True,
            ),  # fmt: skip
            (
                "long_uri",
                b"GET /ping?" + b"a" * self.rng.choice([4090, 5000, 8100, 12000]) + b" HTTP/1.1\r\nHost: fuzz\r\n\r\n",
                True,
                True,
            ),  # fmt: skip
            (
                "long_header",
                b"GET /ping HTTP/1.1\r\nHost: fuzz\r\nX-A: "
                + b"a" * self.rng.choice([8000, 8190, 9000, 15000])
                + b"\r\n\r\n",
                True,
                True,
            ),  # fmt: skip
            (
                "odd_header_name",
                b"GET /ping HTTP/1.1\r\nHost: fuzz\r\nX_A\x7f(): b\r\nX-Amzn-SageMaker-Custom-Attributes: a=b\r\n\r\n",
                True,
                True,
            ),  # fmt: skip
            ("pipelined_ping_garbage", ping + b"GARBAGE\r\n\r\n", True, True),
        ]
        kind, wire, owed, half_close = self.rng.choice(cases)
        count = 2 if kind == "pipelined_ping_garbage" else 1
        requests = [Request(wire, "/raw", None)] * count
        return Case(f"raw:{kind}", requests, [(wire, 0.0)], answers_required=owed, half_close=half_close)

    def case(self) -> Case:
        roll = self.rng.random()
        if roll < 0.20:
            return self.invocation("valid")
        if roll < 0.38:
            return self.invocation("mutated")
        if roll < 0.55:
            return self.invocation("hostile_types")
        if roll < 0.67:
            return self.invocation("odd_headers")
        if roll < 0.77:
            return self.invocation("chunked")
        if roll < 0.80:
            return self.invocation("slow_body")
        if roll < 0.85:
            return self.pipelined()
        if roll < 0.855:
            return self.oversized()
        return self.raw()


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


# ---------------------------------------------------------------------------------------------
# Sending and checking


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def read_responses(sock: socket.socket, count: int, head_only: bool = False) -> list[Response]:
    """Up to `count` HTTP/1.1 responses from the socket (fewer when it closes)."""
    buffer = b""
    responses: list[Response] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                return responses
            buffer += data
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            continue
        if head_only or status in (204, 304):
            responses.append(Response(status, headers, b""))
            continue
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return responses
                    buffer += data
                size_line, buffer = buffer.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(buffer) < size + 2:
                    data = sock.recv(65536)
                    if not data:
                        return responses
                    buffer += data
                body, buffer = body + buffer[:size], buffer[size + 2 :]
                if size == 0:
                    break
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(buffer) < length:
                data = sock.recv(65536)
                if not data:
                    return responses
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
        else:  # until the connection closes
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
            body, buffer = buffer, b""
        responses.append(Response(status, headers, body))
    return responses


def answers_in(response: Response) -> int | None:
    """The number of predictions in a 200 from /invocations."""
    try:
        if response.headers.get("content-type", "").startswith(JSONLINES):
            return len([line for line in response.body.splitlines() if line.strip()])
        return len(json.loads(response.body)["predictions"])
    except (ValueError, KeyError, TypeError):
        return None


def check(case: Case, responses: list[Response], error: str | None) -> list[str]:
    """The invariants broken by these answers (empty: all held)."""
    problems = []
    if error and case.answers_required and len(responses) < len(case.requests):
        problems.append(f"no answer: {error}")
    elif case.answers_required and not responses:
        problems.append("no answer: the connection closed")
    for request, response in zip(case.requests, responses, strict=False):
        if response.status >= 500:
            problems.append(f"{response.status}: {response.body[:200]!r}")
        elif response.status >= 400:
            try:
                message = json.loads(response.body)["error"]
                if not isinstance(message, str) or not message:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                problems.append(f"{response.status} without a JSON error: {response.body[:200]!r}")
        elif response.status == 200 and request.path == "/invocations":
            answers = answers_in(response)
            if answers is None or answers != request.records:
                problems.append(f"200 with {answers} answers for {request.records} records (silent truncation?)")
    return problems


def run_case(host: str, port: int, case: Case) -> tuple[list[Response], list[str]]:
    error = None
    responses: list[Response] = []
    try:
        with socket.create_connection((host, port), timeout=READ_TIMEOUT_S) as sock:
            try:
                for data, pause in case.pieces:
                    sock.sendall(data)
                    if pause:
                        time.sleep(pause)
                if case.half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError as err:  # the server may answer (413) and close before the body is sent
                error = f"send: {err}"
            head_only = case.kind.endswith("method_head")
            responses = read_responses(sock, len(case.requests), head_only)
    except (OSError, ValueError, IndexError) as err:
        error = f"{type(err).__name__}: {err}"
    return responses, check(case, responses, error)


# ---------------------------------------------------------------------------------------------
# Slow clients


def slow_clients(host: str, port: int, count: int, pings: int, target_s: float = PING_TARGET_S) -> dict[str, Any]:
    """`count` connections that stall mid-request, then /ping timed `pings` times."""
    invocation = b"POST /invocations HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
    stalls = [
        invocation[:50],  # partial headers
        invocation + b'Content-Length: 1000\r\n\r\n{"inst',  # part of a body
        invocation + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ins',  # part of a chunk, then a byte a turn
    ]
    sockets = []
    refused = 0
    for index in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(stalls[index % len(stalls)])
            sockets.append(sock)
        except OSError:  # reported: the target is then missed
            refused += 1
    time.sleep(1.0)  # they now hold whatever they can hold
    latencies = []
    statuses = []
    for _ in range(pings):
        start = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=120) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
                response = read_responses(sock, 1)
                statuses.append(response[0].status if response else 0)
        except OSError:
            statuses.append(0)
        latencies.append(time.perf_counter() - start)
        for index, sock in enumerate(sockets):  # the trickling ones send one more byte
            if index % 3 == 2:
                try:
                    sock.sendall(b"t")
                except OSError:
                    pass
        time.sleep(0.25)
    for sock in sockets:
        sock.close()
    return {
        "slow_clients": count,
        "pings": pings,
        "ping_statuses": dict(Counter(statuses)),
        "ping_p50_s": statistics.median(latencies),
        "ping_max_s": max(latencies),
        "target_s": target_s,
        "slow_clients_refused": refused,
        "met": max(latencies) < target_s and set(statuses) == {200} and not refused,
    }


# ---------------------------------------------------------------------------------------------
# A server to test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, nginx: bool, workers: int | None) -> tuple[subprocess.Popen[bytes], Path]:
    sys.path.insert(0, str(ROOT / "container"))
    import torch

    from object2vec.config import Hyperparameters
    from object2vec.model.io import save_model
    from object2vec.model.object2vec import Object2VecModel

    torch.manual_seed(0)
    base = Path(tempfile.mkdtemp(prefix="fuzz_serve_"))
    save_model(Object2VecModel(Hyperparameters.from_dict(HYPERPARAMETERS)), base / "model")
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "container"), os.environ.get("PYTHONPATH")]))
    if not nginx:
        env["OBJECT2VEC_NGINX"] = "off"
    if workers:
        env["MODEL_SERVER_WORKERS"] = str(workers)
    log = base / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "object2vec", "serve"], env=env, stdout=out, stderr=out)
    common.wait_until_serving(process, port, log=log)
    return process, log


# ---------------------------------------------------------------------------------------------


def fuzz(host: str, port: int, requests: int, seed: int, clients: int) -> dict[str, Any]:
    rng = random.Random(seed)
    generator = Generator(rng)
    cases: list[Case] = []
    sent = 0
    while sent < requests:
        case = generator.case()
        cases.append(case)
        sent += len(case.requests)
    kinds: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    violations: list[dict[str, Any]] = []
    truncations = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for case, (responses, problems) in zip(cases, pool.map(lambda c: run_case(host, port, c), cases), strict=True):
            kinds[case.kind.split(":")[0]] += len(case.requests)
            statuses.update(response.status for response in responses)
            truncations += sum("silent truncation" in problem for problem in problems)
            if problems:
                violations.append(
                    {"kind": case.kind, "problems": problems, "request": case.pieces[0][0][:300].decode("latin-1")}
                )
    return {
        "requests": sent,
        "seconds": round(time.perf_counter() - start, 1),
        "kinds": dict(kinds),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "status_5xx": sum(count for status, count in statuses.items() if status >= 500),
        "silent_truncations": truncations,
        "violations": violations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--requests", type=int, default=10_000, help="generated HTTP requests (pipelined ones count each)"
    )
    parser.add_argument("--slow-clients", type=int, default=10, help="stalled connections held while /ping is timed")
    parser.add_argument("--pings", type=int, default=20)
    parser.add_argument("--ping-target-s", type=float, default=PING_TARGET_S, help="slowest /ping allowed")
    parser.add_argument("--clients", type=int, default=4, help="concurrent fuzzing connections")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--no-nginx", action="store_true", help="the server started here runs without nginx")
    parser.add_argument("--workers", type=int, help="MODEL_SERVER_WORKERS of the server started here")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    process = None
    if args.url:
        parsed = urlparse(args.url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    else:
        host, port = "127.0.0.1", free_port()
        process, log = start_server(port, nginx=not args.no_nginx, workers=args.workers)
        logger.info("serve on :%d (%s), log %s", port, "gunicorn only" if args.no_nginx else "nginx + gunicorn", log)
    try:
        report = fuzz(host, port, args.requests, args.seed, args.clients)
        if args.slow_clients:
            report["slow"] = slow_clients(host, port, args.slow_clients, args.pings, args.ping_target_s)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    logger.info("%d requests in %.1f s (load %s)", report["requests"], report["seconds"], os.getloadavg())
    logger.info("by kind: %s", report["kinds"])
    logger.info("statuses: %s", report["statuses"])
    logger.info(
        "5xx: %d, silent truncations: %d, invariant violations: %d",
        report["status_5xx"],
        report["silent_truncations"],
        len(report["violations"]),
    )
    for violation in report["violations"][:20]:
        logger.info("  %s: %s | %r", violation["kind"], "; ".join(violation["problems"]), violation["request"][:120])
    if "slow" in report:
        slow = report["slow"]
        logger.info(
            "/ping with %d slow clients holding connections: p50 %.3f s, max %.3f s, statuses %s (target < %g s: %s)",
            slow["slow_clients"], slow["ping_p50_s"], slow["ping_max_s"], slow["ping_statuses"], slow["target_s"],
            "met" if slow["met"] else "MISSED",
        )  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    failed = bool(report["violations"]) or not report.get("slow", {}).get("met", True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
