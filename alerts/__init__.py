"""The alert engine: rules over ``metric_points``, routing, silences and receivers."""
