"""Pre-release acceptance: the suites run N times, one signed record of every verdict."""
