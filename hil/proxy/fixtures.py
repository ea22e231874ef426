"""The `proxy` fixture: the rig's MQTT proxy, for suites that inject network faults."""
