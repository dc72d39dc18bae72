"""The device service, ``edge serve``: what only the service uses.

The WSGI server (``server``) and the Flask routes (``app``) in front of the
:class:`~edge.service.state.Service`, which holds the models and their reload
(``live``), the jobs (``jobs``) with a stream loop per camera in its thread
(``streams``), their results (``results``), the attribute process the streams share
(``attribute_hub``), request models and checks (``validation``) and Prometheus figures
(``metrics``). Everything a stream runs lives in :mod:`edge.runtime`.
"""
