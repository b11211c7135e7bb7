"""vfe: a self-hosted video frame extraction service."""

__version__ = "0.1.0"
