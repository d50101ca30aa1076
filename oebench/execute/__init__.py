"""Running a plan: data sources, forward passes, training, one cell's work, the driver and executors."""
