"""The nginx configuration serve writes: limits and timeouts from the settings, every error nginx
raises itself answered as JSON, and a configuration nginx itself accepts (`nginx -t`)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import orjson
import pytest

from object2vec.serving.nginx import ERRORS, find_nginx, nginx_config
from object2vec.serving.settings import MIB, ServerSettings, ServingConfig


def render(tmp_path: Path, env: dict[str, str] | None = None) -> str:
    env = env or {}
    settings = ServerSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "9123", **env}, cores=2)
    config = ServingConfig.from_env(env, workers=settings.workers)
    return nginx_config(settings, config, tmp_path / "gunicorn.sock", tmp_path)


def test_listens_on_the_port_and_passes_everything_to_gunicorn(tmp_path: Path) -> None:
    text = render(tmp_path)
    assert "listen 9123 default_server;" in text
    assert f"server unix:{tmp_path / 'gunicorn.sock'};" in text
    assert "proxy_pass http://gunicorn;" in text
    assert "daemon off;" in text  # serve supervises it
    assert f"pid {tmp_path}/nginx.pid;" in text  # nothing written outside the runtime folder
    for temp in re.findall(r"_temp_path (\S+);", text):
        assert temp.startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("env", "body_bytes", "upstream_timeout"),
    [({}, 6 * MIB, 65), ({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"}, 20 * MIB, 605)],
)
def test_body_limit_and_timeouts_follow_the_settings(
    tmp_path: Path, env: dict[str, str], body_bytes: int, upstream_timeout: int
) -> None:
    text = render(tmp_path, env)
    assert f"client_max_body_size {body_bytes};" in text
    # longer than gunicorn's own timeout: the app (or a 502 for a killed worker) answers first
    assert f"proxy_read_timeout {upstream_timeout}s;" in text


def test_every_error_nginx_raises_is_json(tmp_path: Path) -> None:
    text = render(tmp_path)
    answers = {
        int(code): (int(status), orjson.loads(body.replace("\\'", "'"))["error"])
        for code, status, body in re.findall(r"location = /__object2vec_error/(\d+) \{[^}]*return (\d+) '(.*)';", text)
    }
    assert answers == {**ERRORS, 413: (413, ServingConfig().too_large_message())}
    for code, (status, _) in answers.items():
        assert f"error_page {code} " in text
        assert status < 500 or code >= 500  # the client's protocol errors are never answered 5xx
    assert "larger than 6291456 bytes" in answers[413][1]  # the app's own wording


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    nginx = find_nginx()
    if nginx is None:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but nginx is not installed: .ci/run installs it")
        pytest.skip("nginx is not installed (apt-get install nginx-light; .ci/run installs it)")
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(tmp_path))
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_find_nginx(tmp_path: Path) -> None:
    assert find_nginx({"OBJECT2VEC_NGINX": "off"}) is None
    assert find_nginx({"OBJECT2VEC_NGINX": "/opt/nginx/sbin/nginx"}) == "/opt/nginx/sbin/nginx"
    found = find_nginx({})
    assert found is None or Path(found).name == "nginx"
    assert find_nginx({"OBJECT2VEC_NGINX": "auto"}) == found
