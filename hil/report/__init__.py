"""What a run tested and how it went: run.json, the HTML report, history and metrics."""
