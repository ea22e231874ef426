"""The modem's TLS: one SSL context as `AT+CSSLCFG` set it, made into the client the modem's
bridge connects to the broker with, or its HTTP(S) client to an https:// server (modem_http.py).

What the twin does, and where each part comes from:
- `AT+CMQTTACCQ=<i>,"<id>",1` makes client <i> an SSL/TLS client and `AT+CMQTTSSLCFG=<i>,<ctx>`
  picks its SSL context; a client that never said uses context 0, whose settings start as
  "authmode" 0 (SIMCom's A76XX Series MQTT(S) Application Note V1.00, §3.2 connects to port
  8883 with neither command).
- "authmode": 0 no authentication, 1 the server's (needs "cacert"), 2 the server's and the
  client's ("cacert", "clientcert", "clientkey"), 3 the client's alone (the same note, §3.2 to
  §3.4; LilyGO-T-A76XX's `TinyGsmMqttA76xx.h` for 3).
- "sslversion": 4 offers SSL 3.0 up to TLS 1.2 (seed 001), 3 TLS 1.2 alone; the module has no
  TLS 1.3, so a broker refusing the client's certificate says so in the handshake. The twin
  offers nothing older than TLS 1.2: 0 to 2 (SSL 3.0, TLS 1.0, TLS 1.1 alone) fail their
  handshake, as with mosquitto 2, which accepts TLS 1.2 and 1.3 unless told otherwise.
- "enableSNI",<ctx>,1 names the host of `AT+CMQTTCONNECT`'s URL in the ClientHello; unset, the
  module names none, and brokers that need it (Azure IoT Hub, AWS IoT) refuse it (seed 002).
- A failed handshake is `+CMQTTCONNECT: <i>,32`, a certificate the authmode needs but no
  setting names 33 (the note's §4.1).

Whether the module matches the broker's certificate to the host name the manuals do not say;
the twin matches it exactly when it sends SNI, as a TLS stack does that takes both from the
one host name it is given.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUTH_NONE, AUTH_SERVER, AUTH_MUTUAL, AUTH_CLIENT = 0, 1, 2, 3
HANDSHAKE_FAIL = 32
CERT_NOT_SET = 33
TLS12_ONLY, UP_TO_TLS12 = 3, 4
# AT+CSSLCFG keys that take a number, and the numbers each takes; the file keys name a file.
NUMBERS = {"sslversion": range(5), "authmode": range(4), "enablesni": range(2)}
FILES = ("cacert", "clientcert", "clientkey")
DEFAULTS: dict[str, int] = {"sslversion": 4, "authmode": AUTH_NONE, "enablesni": 0}


class CertificateNotSet(Exception):
    """The authmode needs a certificate no setting names (`+CMQTTCONNECT: <i>,33`)."""


@dataclass(frozen=True)
class TlsSettings:
    """One SSL context when `AT+CMQTTCONNECT` used it, its certificate files read from flash."""

    version: int = DEFAULTS["sslversion"]
    authmode: int = DEFAULTS["authmode"]
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    sni: bool = False

    @classmethod
    def of(cls, settings: Mapping[str, int | str], files: Mapping[str, bytes]) -> TlsSettings:
        """The context from its `AT+CSSLCFG` settings (key: value) and the module's files."""

        def file(key: str) -> bytes | None:
            name = settings.get(key)
            return files.get(name) if isinstance(name, str) else None

        number = {k: int(settings.get(k, v)) for k, v in DEFAULTS.items()}
        return cls(
            version=number["sslversion"],
            authmode=number["authmode"],
            ca=file("cacert"),
            cert=file("clientcert"),
            key=file("clientkey"),
            sni=number["enablesni"] == 1,
        )

    @property
    def verifies_server(self) -> bool:
        return self.authmode in (AUTH_SERVER, AUTH_MUTUAL)

    @property
    def presents_certificate(self) -> bool:
        return self.authmode in (AUTH_MUTUAL, AUTH_CLIENT)

    def context(self) -> ssl.SSLContext:
        """The client context; CertificateNotSet, or ssl.SSLError for a file that is no PEM."""
        if self.verifies_server and self.ca is None:
            raise CertificateNotSet(f"authmode {self.authmode} needs cacert")
        if self.presents_certificate and (self.cert is None or self.key is None):
            raise CertificateNotSet(f"authmode {self.authmode} needs clientcert and clientkey")
        context: ssl.SSLContext = (ssl.SSLContext if self.sni else _WithoutSni)(
            ssl.PROTOCOL_TLS_CLIENT
        )
        if self.version not in (TLS12_ONLY, UP_TO_TLS12):
            raise ssl.SSLError(f"sslversion {self.version}: no protocol older than TLS 1.2")
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        if self.version == TLS12_ONLY:
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verifies_server:
            assert self.ca is not None
            context.load_verify_locations(cadata=self.ca.decode("ascii", "replace"))
            context.check_hostname = self.sni
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.presents_certificate:
            assert self.cert is not None and self.key is not None
            _load_pair(context, self.cert, self.key)
        return context


class _WithoutSni(ssl.SSLContext):
    """A client context that never names the server, whatever host its caller connects to."""

    def wrap_socket(self, sock: Any, *args: Any, server_hostname: Any = None, **kwargs: Any):
        return super().wrap_socket(sock, *args, **kwargs)

    def wrap_bio(self, incoming: Any, outgoing: Any, *args: Any, server_hostname: Any = None, **kw):
        return super().wrap_bio(incoming, outgoing, *args, **kw)  # asyncio's way in


def _load_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """OpenSSL loads a certificate and key from files only: from a folder only this user can
    read (mkdtemp's mode 0700), gone as soon as they are loaded."""
    with tempfile.TemporaryDirectory(prefix="hil-modem-") as folder:
        paths = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        for path, data in zip(paths, (cert, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(str(paths[0]), str(paths[1]))
