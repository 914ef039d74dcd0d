"""mlship: turn a Jupyter notebook into a verified, deployable model service."""

__version__ = "0.1.0"
