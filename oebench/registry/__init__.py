"""The plugin manager and the lookup of registered components."""
