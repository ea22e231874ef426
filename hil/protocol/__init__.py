"""The device contract's wire formats: AES echo cipher, ESP32 app images, OTA messages."""
