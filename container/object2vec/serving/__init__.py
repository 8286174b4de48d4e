"""Inference: nginx in front of gunicorn + Flask, answering SageMaker's /ping, /invocations and
/execution-parameters.

codec (bytes <-> instances and predictions, by media type), predictor (the model, validation and
chunked forwards), app (create_app(predictor)), settings (environment), server (serve_main: runs
and supervises nginx and gunicorn), nginx (its configuration), wsgi (the seam gunicorn imports in
each worker).
"""
