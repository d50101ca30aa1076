"""oebench's own version, defined once (the package root and provenance read it here)."""

VERSION = "0.1.0"
