"""Assembling, describing and checking bundles."""
