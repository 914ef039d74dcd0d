"""Helpers shared by the tests: ports and readiness (`servers`), the Docker fixtures (`docker`)."""
