"""Scheduled jobs that turn raw events into rows of ``metric_points``."""
