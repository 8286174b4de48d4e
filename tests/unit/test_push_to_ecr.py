"""docker/push_to_ecr.py without AWS: --help, --dry-run, and the real path against stubbed boto3 clients."""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "push_to_ecr.py"
ACCOUNT, REGION = "123456789012", "eu-west-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


def _load_module() -> Any:
    spec = importlib.util.spec_from_file_location("push_to_ecr", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


push_to_ecr = _load_module()


class FakeDocker:
    """Records docker commands; `docker image inspect` succeeds only for the known images."""

    def __init__(self, images: tuple[str, ...] = ("object2vec:latest",)) -> None:
        self.images = images
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        self.calls.append((command, kwargs))
        code = 0
        if command[:3] == ["docker", "image", "inspect"] and command[3] not in self.images:
            code = 1
        return subprocess.CompletedProcess(command, code, "", "")

    def commands(self) -> list[list[str]]:
        return [command for command, _ in self.calls]


class FakeSession:
    """What main() uses of boto3.Session: region_name and client(); clients are real but stubbed."""

    def __init__(self, clients: dict[str, Any], region_name: str | None = REGION) -> None:
        self.clients = clients
        self.region_name = region_name

    def client(self, service: str, region_name: str | None = None) -> Any:
        return self.clients[service]


def _stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def _never(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a dry run must not call docker or AWS")


def test_help_exits_zero_and_explains_the_steps() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "ECR" in result.stdout and "--dry-run" in result.stdout


def test_dry_run_prints_the_plan_and_calls_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dry-run", "--account-id", ACCOUNT, "--region", REGION, "--image", "object2vec:v1"]
    assert push_to_ecr.main(argv, run=_never, session_factory=_never) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{REGISTRY}/object2vec:v1"
    assert f"docker login --username AWS --password-stdin {REGISTRY}" in "\n".join(out)
    assert any(f"docker push {REGISTRY}/object2vec:v1" in line for line in out)


def test_dry_run_without_account_uses_a_placeholder(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert push_to_ecr.main(["--dry-run"], run=_never, session_factory=_never) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "<account-id>.dkr.ecr.us-west-2.amazonaws.com/object2vec:latest"


@pytest.mark.parametrize(
    ("image", "tag"),
    [("object2vec:latest", "latest"), ("object2vec", "latest"), ("localhost:5000/o2v", "latest"), ("a/b:c1", "c1")],
)
def test_image_tag(image: str, tag: str) -> None:
    assert push_to_ecr.image_tag(image) == tag


def test_china_regions_use_their_own_domain() -> None:
    assert push_to_ecr.image_uri("1", "cn-north-1", "r", "t") == "1.dkr.ecr.cn-north-1.amazonaws.com.cn/r:t"


def test_push_creates_missing_repository_logs_in_tags_and_pushes(capsys: pytest.CaptureFixture[str]) -> None:
    ecr, ecr_stub = _stubbed("ecr")
    sts, sts_stub = _stubbed("sts")
    sts_stub.add_response("get_caller_identity", {"Account": ACCOUNT, "Arn": "arn:aws:iam::1:user/u", "UserId": "u"})
    ecr_stub.add_client_error(
        "describe_repositories", "RepositoryNotFoundException", expected_params={"repositoryNames": ["object2vec"]}
    )
    ecr_stub.add_response("create_repository", {"repository": {}}, expected_params={"repositoryName": "object2vec"})
    token = base64.b64encode(b"AWS:s3cret").decode()
    ecr_stub.add_response(
        "get_authorization_token",
        {"authorizationData": [{"authorizationToken": token, "proxyEndpoint": f"https://{REGISTRY}"}]},
    )
    docker = FakeDocker()
    with ecr_stub, sts_stub:
        code = push_to_ecr.main([], run=docker, session_factory=lambda **_: FakeSession({"ecr": ecr, "sts": sts}))
        ecr_stub.assert_no_pending_responses()
        sts_stub.assert_no_pending_responses()
    assert code == 0
    remote = f"{REGISTRY}/object2vec:latest"
    assert docker.commands() == [
        ["docker", "image", "inspect", "object2vec:latest"],
        ["docker", "login", "--username", "AWS", "--password-stdin", f"https://{REGISTRY}"],
        ["docker", "tag", "object2vec:latest", remote],
        ["docker", "push", remote],
    ]
    login_kwargs = docker.calls[1][1]
    assert login_kwargs["input"] == "s3cret", "the password goes through stdin, never argv"
    out = capsys.readouterr().out
    assert "Created ECR repository object2vec" in out and out.splitlines()[-1] == remote


def test_push_reuses_an_existing_repository() -> None:
    ecr, ecr_stub = _stubbed("ecr")
    ecr_stub.add_response("describe_repositories", {"repositories": [{"repositoryName": "o2v"}]})
    token = base64.b64encode(b"AWS:pw").decode()
    ecr_stub.add_response(
        "get_authorization_token",
        {"authorizationData": [{"authorizationToken": token, "proxyEndpoint": f"https://{REGISTRY}"}]},
    )
    docker = FakeDocker()
    argv = ["--repository", "o2v", "--tag", "v2", "--account-id", ACCOUNT, "--region", REGION]
    with ecr_stub:
        assert push_to_ecr.main(argv, run=docker, session_factory=lambda **_: FakeSession({"ecr": ecr})) == 0
        ecr_stub.assert_no_pending_responses()
    assert docker.commands()[-1] == ["docker", "push", f"{REGISTRY}/o2v:v2"]


def test_missing_local_image_is_reported_before_any_aws_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert push_to_ecr.main(["--image", "nope:1"], run=FakeDocker(), session_factory=_never) == 1
    assert "no local image nope:1" in capsys.readouterr().err
