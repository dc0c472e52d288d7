"""Serving a trained run over HTTP (``hashgnn serve``; the ``serve`` extra: fastapi, uvicorn).

- :mod:`hashgnn.serve.service`: :class:`ServedRun`, a run loaded for serving (ids, retrievers, fold-in);
- :mod:`hashgnn.serve.foldin`: :class:`FoldIn`, codes for users the model has never seen;
- :mod:`hashgnn.serve.batching`: :class:`MicroBatcher`, concurrent requests in one index search;
- :mod:`hashgnn.serve.metrics`: the Prometheus metrics;
- :mod:`hashgnn.serve.app`: the FastAPI app (``create_app``), the web page in ``static/``;
- :mod:`hashgnn.serve.load`: the load generator and synthetic index of ``hashgnn bench serve``.

Importing this package imports neither FastAPI nor torch; the modules do when used.
"""
