"""The ESP32's flash as the bootloader sees it: the running app, the previous one, a staged update.

It outlives firmware restarts (RAM does not), which is what makes OTA and rollback observable.
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.protocol.image import ImageError, parse_image

SELFTEST_FAIL_SUFFIX = "-selftest-fail"


@dataclass(frozen=True)
class App:
    version: str
    project: str = "esp32-sim7600"


class Flash:
    def __init__(self, version: str) -> None:
        self.running = App(version)
        self.previous: App | None = None
        self._staged: bytes | None = None
        self._unconfirmed = False

    def stage(self, image: bytes) -> None:
        """An OTA wrote `image` to the other slot; the next boot tries it."""
        self._staged = image

    def boot(self) -> list[str]:
        """Run the bootloader: switch to a staged image if it verifies. Returns console lines."""
        image, self._staged = self._staged, None
        if image is None:
            return []
        try:
            info = parse_image(image)
        except ImageError as exc:
            return [
                f"E (312) esp_image: {exc}",
                "E (318) boot: OTA app partition slot 1 is not bootable, booting previous app",
            ]
        self.previous = self.running
        self.running = App(info.version, info.project_name)
        self._unconfirmed = True
        return []

    def self_test_fails(self) -> bool:
        """A freshly updated app whose project name marks it as failing its self-test."""
        return self._unconfirmed and self.running.project.endswith(SELFTEST_FAIL_SUFFIX)

    def confirm(self) -> None:
        self._unconfirmed = False

    def rollback(self) -> None:
        if self.previous is not None:
            self.running, self.previous = self.previous, None
        self._unconfirmed = False
