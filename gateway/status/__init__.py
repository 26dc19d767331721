"""The status pages: what an operator or a data scientist looks at in a browser, served on
the metrics port under /status (read-only, behind the same TLS and tokens as /metrics).

The registry is read by a background worker, only while someone looks (collect.py, worker.py);
a page is rendered from its last reading on the metrics server's render pool (site.py,
pages/), so neither a page view nor a slow Redis ever reaches the inference path.
"""
