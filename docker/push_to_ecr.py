#!/usr/bin/env python3
"""Push the locally built image to Amazon ECR, in the spirit of the scikit example's build_and_push.sh.

Steps: find the account (STS) and region; create the ECR repository if it is missing; get an
authorization token and `docker login` with it (the password goes through stdin); `docker tag`
the local image as <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>; `docker push` it.
The last line printed is that image URI: pass it to sagemaker.estimator.Estimator(image_uri=...).

    docker/build.sh && docker/push_to_ecr.py --region eu-west-1
    docker/push_to_ecr.py --dry-run --account-id 123456789012 --region eu-west-1   # no AWS, no docker

Credentials come from the usual boto3 chain (environment, ~/.aws, instance role); --profile picks
a named profile.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_IMAGE = "object2vec:latest"
DEFAULT_REPOSITORY = "object2vec"
DEFAULT_REGION = "us-west-2"  # the scikit example's fallback when no region is configured
PLACEHOLDER_ACCOUNT = "<account-id>"

Runner = Callable[..., subprocess.CompletedProcess]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="push_to_ecr.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"local image to push (default {DEFAULT_IMAGE})")
    parser.add_argument(
        "--repository", default=DEFAULT_REPOSITORY, help=f"ECR repository name (default {DEFAULT_REPOSITORY})"
    )
    parser.add_argument("--tag", help="tag in ECR (default: the local image's tag)")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / the profile's region, else us-west-2)")
    parser.add_argument("--profile", help="AWS profile name (default: the boto3 default chain)")
    parser.add_argument("--account-id", help="AWS account id (default: from STS; needed for a useful --dry-run)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be done, without calling AWS or docker"
    )
    return parser.parse_args(list(argv))


def image_tag(image: str) -> str:
    """'object2vec:latest' -> 'latest'; 'registry:5000/object2vec' -> 'latest'."""
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else "latest"


def registry_host(account: str, region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


def image_uri(account: str, region: str, repository: str, tag: str) -> str:
    return f"{registry_host(account, region)}/{repository}:{tag}"


@dataclass(frozen=True)
class Plan:
    account: str
    region: str
    repository: str
    local_image: str
    remote_image: str

    def describe(self) -> list[str]:
        registry = registry_host(self.account, self.region)
        return [
            f"ecr.describe_repositories(repositoryNames=[{self.repository!r}]) in {self.region}; "
            f"ecr.create_repository(repositoryName={self.repository!r}) if it is missing",
            "ecr.get_authorization_token()",
            f"docker login --username AWS --password-stdin {registry}",
            shlex.join(["docker", "tag", self.local_image, self.remote_image]),
            shlex.join(["docker", "push", self.remote_image]),
        ]


def resolve_region(args: argparse.Namespace, session: Any | None) -> str:
    if args.region:
        return args.region
    if session is not None and session.region_name:
        return session.region_name
    return DEFAULT_REGION


def ensure_repository(ecr: Any, repository: str) -> bool:
    """Create the repository if missing; True when it was created."""
    try:
        ecr.describe_repositories(repositoryNames=[repository])
        return False
    except ecr.exceptions.RepositoryNotFoundException:
        ecr.create_repository(repositoryName=repository)
        return True


def docker_login(ecr: Any, run: Runner) -> None:
    """`docker login` to the registry with a fresh ECR token (password through stdin, never argv)."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    run(
        ["docker", "login", "--username", user, "--password-stdin", data["proxyEndpoint"]],
        input=password,
        text=True,
        check=True,
    )


def main(argv: Sequence[str], run: Runner = subprocess.run, session_factory: Callable[..., Any] | None = None) -> int:
    args = parse_args(argv)
    tag = args.tag or image_tag(args.image)

    if args.dry_run:
        region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        account = args.account_id or PLACEHOLDER_ACCOUNT
        plan = Plan(account, region, args.repository, args.image, image_uri(account, region, args.repository, tag))
        print("Dry run: nothing is called. The steps would be:")
        for number, step in enumerate(plan.describe(), 1):
            print(f"  {number}. {step}")
        print(plan.remote_image)
        return 0

    if run(["docker", "image", "inspect", args.image], capture_output=True).returncode != 0:
        print(f"push_to_ecr.py: no local image {args.image}: build it first (docker/build.sh)", file=sys.stderr)
        return 1
    if session_factory is None:
        import boto3

        session_factory = boto3.Session
    session = session_factory(profile_name=args.profile) if args.profile else session_factory()
    region = resolve_region(args, session)
    account = args.account_id or session.client("sts", region_name=region).get_caller_identity()["Account"]
    remote = image_uri(account, region, args.repository, tag)
    ecr = session.client("ecr", region_name=region)

    if ensure_repository(ecr, args.repository):
        print(f"Created ECR repository {args.repository} in {region}")
    docker_login(ecr, run)
    run(["docker", "tag", args.image, remote], check=True)
    run(["docker", "push", remote], check=True)
    print(remote)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
