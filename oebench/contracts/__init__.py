"""What plugins implement (datasets, text, detectors, models, objectives); checks of what
they return."""
