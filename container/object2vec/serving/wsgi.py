"""The WSGI seam: gunicorn imports this in each worker, and importing it loads the model.

This is the one module that works at import time, on purpose: it is imported only by a server
worker (`serve`, or `gunicorn -c docker/gunicorn.conf.py object2vec.serving.wsgi:app`).
"""

from __future__ import annotations

from object2vec.environment import model_dir
from object2vec.serving.app import create_app
from object2vec.serving.predictor import Predictor
from object2vec.serving.settings import ServingConfig

config = ServingConfig.from_env()
app = create_app(Predictor.load(model_dir(), max_instances=config.max_instances), config)
