"""Iris: Inter-cloud Resource Integration System, a HaaS resource manager."""

__version__ = "0.1.0"
