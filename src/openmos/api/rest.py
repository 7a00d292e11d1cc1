"""Compatibility names for code written against the single-file REST module: the app is assembled in
``openmos.api.app`` from the routers in ``openmos.api.routers``."""

from openmos.api.app import create_app
from openmos.api.deps import AnySession, Operator, operator, session
from openmos.api.logs import LogBuffer

__all__ = ["AnySession", "LogBuffer", "Operator", "create_app", "operator", "session"]
