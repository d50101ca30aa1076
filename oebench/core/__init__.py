"""Shared plumbing: settings, progress, file helpers, failure messages."""
