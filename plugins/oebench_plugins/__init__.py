"""oebench's first-party plugins. Each module is one plugin, loaded through the ``oebench``
entry-point group exactly like a third-party plugin, and uses only oebench's public API."""
