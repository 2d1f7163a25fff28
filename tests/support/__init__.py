"""Helpers shared by the test suites (importable, unlike conftest.py): the services under test,
API keys and shops, error details as a caller reads them, events, and data builders."""
