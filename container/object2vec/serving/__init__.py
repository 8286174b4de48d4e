"""Inference: gunicorn + Flask answering SageMaker's /ping, /invocations and /execution-parameters.

codec (bytes <-> instances and predictions, by media type), predictor (the model, validation and
chunked forwards), app (create_app(predictor)), settings (environment), server (serve_main),
wsgi (the seam gunicorn imports in each worker).
"""
