"""sharpwatch service: the FastAPI app that stores RLVR health metrics, serves them over REST and
Prometheus, detects collapse, and sends commands back to trainers.

Errors: every exception the service raises on purpose derives from
:class:`service.errors.SharpwatchError`.
"""

__version__ = "0.1.0"
