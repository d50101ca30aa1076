"""The results store, its schema and the recorder (the only writer during a run)."""
