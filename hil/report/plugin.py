"""pytest side of reporting: per-test results, run.json, history, metrics and the report."""
