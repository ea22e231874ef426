"""In-repo glue for the HIL suites: they run in the session's event loop, next to the rig."""
