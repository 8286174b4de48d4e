"""`make demo` (local_test/demo.sh) end to end on a copy of local_test/, then every request example of
the README (its `curl ... localhost:8080/invocations` lines, and local_test/predict.sh) against the
model that the demo trained, served by the real `serve`."""

from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.test_serve import Server, free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO_TIMEOUT_S = 600  # the whole demo, training included, on a busy 2-core machine


def demo_copy(folder: Path, **hyperparameters: str) -> Path:
    """local_test/ without outputs, beside a link to container/ (demo.sh finds the package there)."""
    local = folder / "local_test"
    local.mkdir(parents=True)
    shutil.copy2(ROOT / "local_test" / "demo.sh", local / "demo.sh")
    shutil.copytree(ROOT / "local_test" / "test_dir" / "input", local / "test_dir" / "input")
    (local / "test_dir" / "model").mkdir()
    (local / "test_dir" / "output").mkdir()
    (folder / "container").symlink_to(ROOT / "container")
    if hyperparameters:
        config = local / "test_dir" / "input" / "config" / "hyperparameters.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **hyperparameters}))
    return local


def run_demo(local: Path, port: int, path_first: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`make demo` as the Makefile runs it: the venv's bin/ first on PATH (or `path_first`)."""
    path = [str(path_first)] if path_first else []
    path += [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    env = {**os.environ, "PATH": os.pathsep.join(path), "DEMO_PORT": str(port), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", str(local / "demo.sh")], env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The demo run, and its test_dir (holding the model it trained)."""
    local = demo_copy(tmp_path_factory.mktemp("demo"))
    return run_demo(local, free_port()), local / "test_dir"


def test_demo_trains_serves_and_explains_the_scores(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, test_dir = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "#quality_metric: host=algo-1, test accuracy <score>=" in out
    assert "class 1 means in0 and in1 share a topic" in out
    same, different = (float(p) for p in re.findall(r"P\(same topic\) = (\S+)", out))
    assert same > 0.5 > different  # topic 0 with topic 0, then topic 1 with topic 7
    assert re.search(r"its 32-value embedding", out)
    assert out.rstrip().endswith("== stopping the server")
    assert (test_dir / "model" / "model.safetensors").is_file()


def test_demo_fails_before_training_when_the_port_is_taken(tmp_path: Path) -> None:
    local = demo_copy(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_demo(local, taken.getsockname()[1])
    assert result.returncode != 0
    assert "is not free" in result.stderr and "DEMO_PORT" in result.stderr
    assert "== train" not in result.stdout


def test_demo_stops_as_soon_as_the_server_exits(tmp_path: Path) -> None:
    """A `serve` that dies at start: the demo reports its exit and log at once, not a /ping timeout."""
    local = demo_copy(tmp_path / "copy", epochs="1")
    shim = tmp_path / "shim"
    shim.mkdir()
    python = shim / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$*" == "-m object2vec serve" ]]; then echo "simulated: cannot bind" >&2; exit 3; fi\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    result = run_demo(local, free_port(), path_first=shim)
    assert result.returncode != 0
    assert "demo: serve exited with code 3 before answering /ping" in result.stderr
    assert "simulated: cannot bind" in result.stderr  # the end of serve.log
    assert "did not answer /ping within" not in result.stderr


# ---------------------------------------------------------------------------------------------
# The README's request examples


@dataclass
class Example:
    command: str  # the curl command as the README writes it
    headers: dict[str, str]
    body: bytes
    expected: list[Any]  # the documented answer: one JSON value per `# {...}` line


def readme_examples() -> list[Example]:
    """Each `curl ... /invocations` command in a fenced block of the README, with the `# {...}`
    lines right after it (the documented answer; `, ...]` elides the rest of a list)."""
    examples = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for index, line in enumerate(lines):
            if not (line.startswith("curl ") and "/invocations" in line):
                continue
            expected = []
            for after in lines[index + 1 :]:
                if not after.startswith("# {"):
                    break
                expected.append(json.loads(after[2:].replace(", ...]", ', "..."]')))
            examples.append(Example(line, *curl_request(line), expected))
    return examples


def curl_request(command: str) -> tuple[dict[str, str], bytes]:
    """The headers and body of a curl command line (-H, -d, --data-binary; $'...' quoting)."""
    words = shlex.split(command.replace("$'", "'$"))  # keep the $'...' marker inside the word
    headers, body = {}, b""
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "-H":
            name, _, content = value.partition(":")
            headers[name.strip()] = content.strip()
        elif flag in ("-d", "--data", "--data-binary"):
            text = codecs.decode(value[1:], "unicode_escape") if value.startswith("$") else value
            body = text.encode()
    return headers, body


def same_shape(documented: Any, actual: Any, where: str = "answer") -> None:
    """The documented answer, up to values: keys, list lengths (unless elided), types; and the
    most likely class of every scores list."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict) and actual.keys() == documented.keys(), f"{where}: {actual} vs {documented}"
        for key in documented:
            same_shape(documented[key], actual[key], f"{where}.{key}")
        if "scores" in documented and len(documented["scores"]) > 1:
            scores, shown = actual["scores"], documented["scores"]
            assert scores.index(max(scores)) == shown.index(max(shown)), f"{where}: scores {scores}, README {shown}"
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        if documented and documented[-1] == "...":
            assert len(actual) >= len(documented) - 1, f"{where}: {len(actual)} values"
            documented = documented[:-1]
            actual = actual[: len(documented)]
        assert len(actual) == len(documented), f"{where}: {len(actual)} values, README shows {len(documented)}"
        for i, (shown, got) in enumerate(zip(documented, actual, strict=True)):
            same_shape(shown, got, f"{where}[{i}]")
    elif isinstance(documented, str):
        assert actual == documented, f"{where}: {actual!r}, README shows {documented!r}"
    else:
        assert isinstance(actual, (int, float)) and isinstance(documented, (int, float)), f"{where}: {actual!r}"


@pytest.fixture(scope="module")
def demo_server(
    demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    result, test_dir = demo
    assert result.returncode == 0, "the demo failed: see test_demo_trains_serves_and_explains_the_scores"
    server = start_server(test_dir, tmp_path_factory.mktemp("demo_serve") / "serve.log", MODEL_SERVER_WORKERS="1")
    yield server
    stop_server(server)


def test_readme_has_request_examples() -> None:
    examples = readme_examples()
    assert len(examples) >= 3 and all(example.expected for example in examples), examples


@pytest.mark.parametrize("example", readme_examples(), ids=lambda example: example.command[:60])
def test_readme_request_example_runs_against_the_demo_model(demo_server: Server, example: Example) -> None:
    response = requests.post(f"{demo_server.url}/invocations", data=example.body, headers=example.headers, timeout=60)
    errors = [value for value in example.expected if isinstance(value, dict) and "error" in value]
    assert response.status_code == (400 if errors else 200), response.text
    answer = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    same_shape(example.expected, answer)


def test_predict_script_scores_the_test_records(demo_server: Server) -> None:
    """README: `local_test/predict.sh  # 5 test records as application/jsonlines -> 5 lines of {"scores": [...]}`."""
    assert "local_test/predict.sh                   # 5 test records" in README.read_text()
    port = demo_server.url.rsplit(":", 1)[1]
    result = subprocess.run(
        ["bash", str(ROOT / "local_test" / "predict.sh")],
        env={**os.environ, "PORT": port},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5 and all(len(line["scores"]) == 2 for line in lines), result.stdout
