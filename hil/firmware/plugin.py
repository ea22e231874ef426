"""pytest options for the firmware under test (`--firmware`, `--reflash`)."""
