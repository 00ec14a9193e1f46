"""A reader for FreneticDataSyntax (FDS), the format of SwarmUI's `Data/*.fds` files.

It follows FreneticUtilities' `FDSParser`/`FDSUtility` (the library SwarmUI loads its settings
with), so a file this reader accepts is read the same way by SwarmUI:

- Tabs count as 4 spaces (`CleanFileData` rewrites them before parsing), so tab and space
  indentation are interchangeable; nesting is by the number of leading spaces, and a deeper line
  with no key above it is an error ("Spacing grew for no reason").
- `key: value` (the first `:` or `=` separates); `key= base64` is binary data.
- `key:` with nothing after it opens a sub-section; with no deeper lines it is an EMPTY SECTION,
  never an empty string. An empty string is written `\\x`.
- `#` lines are comments. Values are trimmed of spaces and un-escaped (`\\x` nothing, `\\s` a
  backslash, `\\t` `\\n` `\\r`); keys also `\\d` `.`, `\\c` `:`, `\\e` `=`.
- Values are typed like `FDSUtility.InterpretType`: integers and decimals that print back the same,
  `true`/`false`, everything else a string.
- `- item` lines under a key form a list.

Stricter than upstream in two ways, which is what a check of our own files wants: a key repeated
in one section is an error (upstream keeps the last), and complex lists (`>`) are refused rather
than half-supported.
"""

import base64
import re

LIST_PREFIXES = "-=>"


class FDSError(ValueError):
    pass


def _error(line_number: int, line: str, reason: str) -> FDSError:
    return FDSError(f"[FDS Parsing error] Line {line_number + 1}: {reason}, from line as follows: {line}")


def clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace(">\t", ">   ").replace("\t", "    ")


def unescape(value: str) -> str:
    if "\\" in value:
        value = value.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r")
        value = value.replace("\\x", "").replace("\\s", "\\")
    return value


def unescape_key(key: str) -> str:
    if "\\" in key:
        key = unescape(key.replace("\\d", ".").replace("\\c", ":").replace("\\e", "="))
    return key


def escape(value: str) -> str:
    """`FDSUtility.Escape`: what a writer must emit for `value` to read back unchanged."""
    if not value:
        return "\\x"
    value = value.replace("\\", "\\s").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if value.endswith(" "):
        value += "\\x"
    if value.startswith(" "):
        value = "\\x" + value
    return value


def interpret(text: str):
    if re.fullmatch(r"-?\d+", text) and str(int(text)) == text and -(2**63) <= int(text) < 2**63:
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        number = float(text)
        # .NET prints an integral double without ".0", so "1.0" does not round-trip and stays a string.
        if not number.is_integer() and repr(number) == text:
            return number
    if text == "true":
        return True
    if text == "false":
        return False
    return text


def _basic(prefix: str, text: str, lines: list[str], line_number: int):
    if prefix == "=":
        try:
            return base64.b64decode(text, validate=True)
        except ValueError as error:
            raise _error(line_number, lines[line_number], f"Binary data ({text}) invalid - {error}") from None
    return interpret(text)


def _split(line: str) -> tuple[str, int, str]:
    trimmed_start = line.lstrip(" ")
    return trimmed_start, len(line) - len(trimmed_start), trimmed_start.rstrip(" ")


def _parse_list(lines: list[str], start: int, skip: int, spacing: int, out: list) -> int:
    end = start
    line_number = start + skip
    while line_number < len(lines):
        full = lines[line_number]
        trimmed_start, spaces, trimmed = _split(full)
        if not trimmed_start or trimmed[0] == "#":
            line_number += 1
            continue
        if spaces < spacing:
            return end
        if spaces > spacing:
            raise _error(line_number, full, f"Spacing grew for no reason (expected {spacing} but got {spaces}) "
                                            "inside a list - possibly forgot a key, or mixed up tabs?")
        if trimmed[0] not in LIST_PREFIXES:
            return end
        if trimmed[0] == ">":
            raise _error(line_number, full, "complex lists ('>') are not supported by this reader")
        # Upstream does not un-escape list item text.
        out.append(_basic(trimmed[0], trimmed[1:].lstrip(), lines, line_number))
        end = line_number
        line_number += 1
    return end


def _parse_sub_section(lines: list[str], start: int, skip: int, spacing: int):
    for line_number in range(start + skip, len(lines)):
        trimmed_start, spaces, trimmed = _split(lines[line_number])
        if not trimmed_start or trimmed[0] == "#":
            continue
        if spaces < spacing:
            break
        if spaces > spacing:
            section = {}
            end = _parse_section(lines, start, skip, spaces, section)
            return section, end
        if trimmed[0] in LIST_PREFIXES:
            items = []
            end = _parse_list(lines, start + skip, 0, spacing, items)
            return items, end
        break
    return {}, start


def _parse_section(lines: list[str], start: int, skip: int, spacing: int, section: dict) -> int:
    end = start
    line_number = start + skip
    while line_number < len(lines):
        full = lines[line_number]
        trimmed_start, spaces, trimmed = _split(full)
        if not trimmed_start or trimmed[0] == "#":
            line_number += 1
            continue
        if spaces < spacing:
            return end
        if trimmed[0] in LIST_PREFIXES:
            raise _error(line_number, full, "Tried to build a list without a key - likely forgot to specify a key?")
        if spaces > spacing:
            raise _error(line_number, full, f"Spacing grew for no reason (expected {spacing} but got {spaces}) "
                                            "- possibly forgot a key, or mixed up tabs?")
        separator = min((i for i in (trimmed.find(":"), trimmed.find("=")) if i >= 0), default=-1)
        if separator == -1:
            raise _error(line_number, full,
                         "Line inside general section has unknown purpose - are you missing a symbol?")
        key = trimmed[:separator]
        if not key:
            raise _error(line_number, full, "Empty key label - use '\\x' to create an intentionally empty key.")
        key = unescape_key(key)
        if separator == len(trimmed) - 1:
            if trimmed[separator] == "=":
                raise _error(line_number, full, "Cannot create a binary subsection - use ':', or put the binary "
                                                "data on the same line.")
            value, line_number = _parse_sub_section(lines, line_number, 1, spacing)
        else:
            value = _basic(trimmed[separator], unescape(trimmed[separator + 1:].lstrip(" ")), lines, line_number)
        if key in section:
            raise _error(line_number, full, f"key {key!r} appears twice in one section")
        section[key] = value
        end = line_number
        line_number += 1
    return end


def loads(text: str) -> dict:
    """Parse FDS text into nested dicts (sections), lists, and typed values."""
    lines = clean(text).split("\n")
    root: dict = {}
    end = _parse_section(lines, 0, 0, 0, root)
    for line_number in range(end + 1, len(lines)):
        trimmed = lines[line_number].strip(" ")
        if trimmed and not trimmed.startswith("#"):
            raise _error(line_number, lines[line_number],
                         "Line inside root has unknown purpose - are you missing a symbol?")
    return root


def empty_sections(tree: dict, prefix: str = "") -> list[str]:
    """Dotted paths of keys whose value parsed to an empty section: almost always a value left blank."""
    found = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found.extend([path] if not value else empty_sections(value, f"{path}."))
    return found


def get(tree: dict, dotted: str):
    """`FDSSection.GetObject("A.B")`: the value at a dotted path, or KeyError."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node
