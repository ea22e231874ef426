"""hil: a plugin-based pytest harness for hardware-in-the-loop tests of cellular IoT devices."""

__version__ = "0.1.0"
