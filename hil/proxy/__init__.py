"""An MQTT-aware proxy between the device and any broker: it records what the device says on
the wire and injects network faults on command."""
