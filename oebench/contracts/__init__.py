"""What plugins implement (datasets, text, detectors, models, objectives) and the checks of what they return."""
