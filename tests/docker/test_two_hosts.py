"""The image trains one job as two containers, algo-1 and algo-2, on a user-defined Docker network,
as SageMaker local mode does for instance_count=2 (a compose network where each container is
reachable by its host name).

Each container gets its own /opt/ml whose resourceconfig.json lists both hosts; algo-1 is the
master (rendezvous on port 29500 inside the network). User-defined bridge networks work with the
dockerd that .ci/run starts (--bridge none and --iptables=false only drop the default bridge and
host NAT rules; containers on one user-defined network still reach each other by name).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from image_helpers import LABEL, docker, is_ci, make_opt_ml

pytestmark = pytest.mark.docker

HOSTS = ["algo-1", "algo-2"]
TRAIN_TIMEOUT_S = 900


def opt_ml_for(host: str, root: Path) -> Path:
    opt_ml = make_opt_ml(root / host, epochs="2")
    resource = {"current_host": host, "hosts": HOSTS, "network_interface_name": "eth0"}
    (opt_ml / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
    return opt_ml


def test_two_containers_train_one_job(image: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    network = f"o2v-test-{suffix}"
    created = docker("network", "create", "--driver", "bridge", "--label", LABEL, network, check=False)
    if created.returncode != 0:
        reason = f"the engine cannot create a user-defined bridge network: {created.stderr.strip()[:300]}"
        if is_ci():
            pytest.fail(reason + " (dockerd must allow user-defined bridge networks)")
        pytest.skip(reason)
    names = {host: f"o2v-test-{suffix}-{host}" for host in HOSTS}
    bases = {host: opt_ml_for(host, tmp_path) for host in HOSTS}
    try:
        for host in HOSTS:
            docker(
                "run", "-d", "--name", names[host], "--label", LABEL,
                "--network", network, "--network-alias", host,
                "-e", "OBJECT2VEC_RENDEZVOUS_TIMEOUT=300",
                "-v", f"{bases[host]}:/opt/ml",
                image, "train",
            )  # fmt: skip
        codes = {host: docker("wait", names[host], timeout=TRAIN_TIMEOUT_S).stdout.strip() for host in HOSTS}
        logs = {host: _logs(names[host]) for host in HOSTS}
    finally:
        for name in names.values():
            docker("rm", "-f", name, check=False)
        docker("network", "rm", network, check=False)

    assert codes == {"algo-1": "0", "algo-2": "0"}, logs
    master, worker = logs["algo-1"], logs["algo-2"]
    assert "Joined the job as rank 0 of 2" in master and "Joined the job as rank 1 of 2" in worker
    assert "#quality_metric: host=algo-1, epoch=1, validation accuracy <score>=" in master
    assert "#quality_metric: host=algo-1, test accuracy <score>=" in master
    assert "#quality_metric" not in worker
    assert (bases["algo-1"] / "model" / "model.safetensors").exists()
    assert not (bases["algo-2"] / "model" / "model.safetensors").exists()
    assert (bases["algo-2"] / "output" / "success").exists()


def _logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return result.stdout + result.stderr
