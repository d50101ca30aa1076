"""A benchmark as values: parsing, validation and the plan of tasks."""
