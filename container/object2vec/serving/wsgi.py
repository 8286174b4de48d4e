"""The WSGI seam: gunicorn imports this in each worker, and importing it loads the model.

This is the one module that works at import time, on purpose: it is imported only by a server
worker (`serve`, or `gunicorn -c docker/gunicorn.conf.py object2vec.serving.wsgi:app`).
"""

from __future__ import annotations

from object2vec.environment import model_dir
from object2vec.retrieval.index_file import INDEX_FILE
from object2vec.serving.app import create_app
from object2vec.serving.predictor import Predictor
from object2vec.serving.server import worker_governor
from object2vec.serving.settings import ServingConfig

config = ServingConfig.from_env()
predictor = Predictor.load(model_dir(), max_instances=config.max_instances)
predictor.governor = worker_governor()  # re-counts the idle cores as load comes and goes
retriever = None
if (model_dir() / INDEX_FILE).is_file():  # faiss is imported only by models with a retrieval index
    from object2vec.retrieval.retriever import Retriever

    retriever = Retriever.load(model_dir(), predictor)
app = create_app(predictor, config, retriever)
