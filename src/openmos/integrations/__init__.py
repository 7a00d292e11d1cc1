"""Integrations with third-party tools (pyasic). Imports only the public wire APIs of a device."""
