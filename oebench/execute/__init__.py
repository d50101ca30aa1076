"""Running a plan: data sources, forward passes, training, each cell's work, driver, executors."""
