"""AT command lines as the SIM7600 parses them: `AT+NAME`, `AT+NAME?`, `AT+NAME=args`."""

from __future__ import annotations

from dataclasses import dataclass

Arg = int | str


class AtSyntaxError(ValueError):
    """A command line the modem answers with ERROR."""


@dataclass(frozen=True)
class Command:
    name: str  # upper case, with its prefix: "AT", "ATE0", "+CMQTTSTART"
    query: bool = False  # AT+NAME?
    args: tuple[Arg, ...] = ()

    def arg(self, index: int, kind: type, default: Arg | None = None) -> Arg:
        """Argument `index` of type `kind`; AtSyntaxError when it is missing or of another type."""
        if index >= len(self.args):
            if default is not None:
                return default
            raise AtSyntaxError(f"{self.name}: argument {index + 1} missing")
        value = self.args[index]
        if not isinstance(value, kind):
            raise AtSyntaxError(f"{self.name}: argument {index + 1} is not {kind.__name__}")
        return value


def _split_args(text: str) -> tuple[Arg, ...]:
    args: list[Arg] = []
    i = 0
    while i <= len(text):
        if i < len(text) and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise AtSyntaxError(f"unterminated string in {text!r}")
            args.append(text[i + 1 : end])
            i = end + 1
            if i < len(text) and text[i] != ",":
                raise AtSyntaxError(f"junk after string in {text!r}")
        else:
            end = text.find(",", i)
            end = len(text) if end < 0 else end
            raw = text[i:end].strip()
            digits = raw.removeprefix("-")
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 10):
                raise AtSyntaxError(f"not a number: {raw!r}")  # the module reads ASCII only
            args.append(int(raw))
            i = end
        i += 1
    return tuple(args)


def parse(line: str) -> Command:
    """Parse one command line (without its CR); AtSyntaxError if it is not an AT command."""
    text = line.strip()
    if not text.upper().startswith("AT"):
        raise AtSyntaxError(f"not an AT command: {line!r}")
    body = text[2:]
    if not body.startswith("+"):
        return Command(name=("AT" + body).upper())
    if body.endswith("?"):
        return Command(name=body[:-1].upper(), query=True)
    name, eq, rest = body.partition("=")
    if not eq:
        return Command(name=name.upper())
    return Command(name=name.upper(), args=_split_args(rest))
