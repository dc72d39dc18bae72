"""The device service, ``edge serve``.

The Flask app (``app``), what it holds (``state``), request checks (``validation``),
Prometheus figures (``metrics``), and the WSGI server (``server``).
"""
