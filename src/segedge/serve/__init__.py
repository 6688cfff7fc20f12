"""``segedge serve``: a click-to-segment web page and an HTTP API over model folders (the ``serve`` extra).

:mod:`~segedge.serve.service` does the work (models, caches, JSON in and out) and needs no web
framework; :mod:`~segedge.serve.app` puts it behind FastAPI with the static page from ``static/``;
:mod:`~segedge.serve.server` runs it with uvicorn.
"""
