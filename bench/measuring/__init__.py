"""Measuring one cell: the planner, the child-process runner and worker, trackers, metrics."""
