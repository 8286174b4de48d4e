"""gunicorn settings for running the inference server by hand, from the repository root:

    PYTHONPATH=container gunicorn -c docker/gunicorn.conf.py object2vec.serving.wsgi:app

The image's `serve` applies these options itself (object2vec.serving.server.gunicorn_options,
read from the same environment variables: SAGEMAKER_BIND_TO_PORT, MODEL_SERVER_WORKERS,
MODEL_SERVER_TIMEOUT, SAGEMAKER_BATCH, ...); this file gives a plain `gunicorn` command line the
same behaviour, e.g. under another process manager or for debugging. It is gunicorn alone on the
port: `serve` also puts nginx in front (it reads requests whole, so slow clients never hold a
worker); put your own proxy in front of this one when clients are not trusted.
"""

import os

from object2vec.serving.server import MOST_THREADS_ENV, THREADS_ENV, gunicorn_options
from object2vec.serving.settings import ServerSettings
from object2vec.threads import configure_threads, free_cores

configure_threads()  # as `serve` does: the OpenMP wait policy, before a worker loads torch
_settings = ServerSettings.from_env(free=free_cores())
# As `serve` does: the workers read their torch thread count from the environment.
os.environ.setdefault(THREADS_ENV, str(_settings.threads_per_worker))
os.environ.setdefault(MOST_THREADS_ENV, str(_settings.most_threads_per_worker))
os.environ.setdefault("OMP_NUM_THREADS", str(_settings.threads_per_worker))

# gunicorn reads every module-level name that is one of its settings.
globals().update(gunicorn_options(_settings))
