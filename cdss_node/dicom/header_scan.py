"""A lean walk over the top-level data elements of an encoded dataset.

The receiver must check every instance before it answers (UIDs, pixel description, truncation)
without decoding it. pydicom builds a full ``Dataset`` for that, about 0.3 ms for a CT header,
a large share of ingest time; this walk only records where each top-level element's value lies
(sequences and encapsulated pixel data are skipped over, never parsed) and decodes the handful
of values the receiver needs. Tests compare it with pydicom on generated datasets.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs with a reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})


MAX_DEPTH = 64  # nested sequences; real objects nest a handful deep (functional groups: 3)
# Elements walked, nested ones included: a CT header has a few hundred, an enhanced
# multi-frame CT of 2000 frames some 60 000 with its functional groups. The walk costs about
# 2 us an element, so a dataset of millions of tiny elements is refused in half a second
# instead of holding a core for minutes.
MAX_ELEMENTS = 250_000


class Truncated(ValueError):
    """The encoded dataset ends inside an element."""


class TooDeep(ValueError):
    """Sequences nested deeper than ``MAX_DEPTH`` (the walk recurses once per level)."""


class TooManyElements(ValueError):
    """More than ``MAX_ELEMENTS`` data elements."""


class Element(NamedTuple):  # a tuple: built ~100 times per instance, 3x faster than a dataclass
    offset: int   # where the value starts
    length: int   # value length in bytes; UNDEFINED for undefined-length values
    end: int      # where the next element starts


new_element = tuple.__new__  # Element(...) through its generated __new__ takes twice as long


class HeaderScan:
    """Top-level elements by tag, and their values decoded on demand."""

    def __init__(self, data: bytes, implicit_vr: bool, little_endian: bool):
        self.data = data
        self.implicit_vr = implicit_vr
        self.endian = "<" if little_endian else ">"
        self.elements: dict[int, Element] = {}
        self.end = _Walker(data, implicit_vr, self.endian).top_level(self.elements)

    def __contains__(self, tag: int) -> bool:
        return tag in self.elements

    def text(self, tag: int) -> str | None:
        """A string value (UI, CS, IS, ...) without padding, or None if absent."""
        element = self.elements.get(tag)
        if element is None or element.length == UNDEFINED:
            return None
        value = self.data[element.offset:element.offset + element.length]
        return value.rstrip(b"\x00 ").lstrip(b" ").decode("ascii", errors="replace")

    def us(self, tag: int) -> int | None:
        """An unsigned short (US) value, or None if absent or empty."""
        element = self.elements.get(tag)
        if element is None or element.length < 2 or element.length == UNDEFINED:
            return None
        return struct.unpack_from(self.endian + "H", self.data, element.offset)[0]


class _Walker:
    def __init__(self, data: bytes, implicit_vr: bool, endian: str):
        self.data, self.n = data, len(data)
        self.implicit_vr = implicit_vr
        self.tag_fmt = struct.Struct(endian + "HHL")  # group, element, 4-byte length
        self.short_fmt = struct.Struct(endian + "H")
        self.long_fmt = struct.Struct(endian + "L")
        self.short_shift = 16 if endian == "<" else 0
        self.depth = 0
        self.left = MAX_ELEMENTS

    def top_level(self, into: dict[int, Element]) -> int:
        """Walk the top-level elements into ``into``; where the next one starts after them.

        ``header`` is inlined here: the walk meets about a hundred elements per CT image and
        a call per element was a third of its time."""
        pos, n, data = 0, self.n, self.data
        unpack, long_unpack = self.tag_fmt.unpack_from, self.long_fmt.unpack_from
        implicit, shift = self.implicit_vr, self.short_shift
        while pos < n:
            if pos + 8 > n:
                raise Truncated(f"element header at byte {pos} is cut off")
            self.left -= 1
            if self.left < 0:
                raise TooManyElements(f"more than {MAX_ELEMENTS} data elements")
            group, element, length = unpack(data, pos)
            tag, offset = group << 16 | element, pos + 8
            if not implicit and group != 0xFFFE:
                if data[pos + 4:pos + 6] in _LONG_VRS:
                    if pos + 12 > n:
                        raise Truncated(f"element header at byte {pos} is cut off")
                    offset, length = pos + 12, long_unpack(data, pos + 8)[0]
                else:  # bytes 4-7 read as one number: the VR in one half, the length in the other
                    length = length >> shift & 0xFFFF
            if length == UNDEFINED:
                pos = self.skip_items(offset)
            elif offset + length > n:
                raise Truncated(f"value at byte {offset} needs {length} bytes")
            else:
                pos = offset + length
            into[tag] = new_element(Element, (offset, length, pos))
        return pos

    def header(self, pos: int) -> tuple[int, int, int]:
        """(tag, value offset, value length) of the element at ``pos``."""
        if pos + 8 > self.n:
            raise Truncated(f"element header at byte {pos} is cut off")
        self.left -= 1
        if self.left < 0:
            raise TooManyElements(f"more than {MAX_ELEMENTS} data elements")
        group, element, implicit_length = self.tag_fmt.unpack_from(self.data, pos)
        tag = group << 16 | element
        if self.implicit_vr or group == 0xFFFE:
            return tag, pos + 8, implicit_length
        vr = self.data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > self.n:
                raise Truncated(f"element header at byte {pos} is cut off")
            return tag, pos + 12, self.long_fmt.unpack_from(self.data, pos + 8)[0]
        return tag, pos + 8, self.short_fmt.unpack_from(self.data, pos + 6)[0]

    def skip_value(self, offset: int, length: int) -> int:
        """The position after a value; undefined lengths are walked to their delimiter."""
        if length != UNDEFINED:
            if offset + length > self.n:
                raise Truncated(f"value at byte {offset} needs {length} bytes")
            return offset + length
        return self.skip_items(offset)

    def skip_items(self, pos: int) -> int:
        """Items of a sequence (or fragments of encapsulated data) up to its delimiter."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooDeep(f"sequences nested more than {MAX_DEPTH} deep at byte {pos}")
        while True:
            tag, offset, length = self.header(pos)
            if tag == SEQUENCE_END:
                self.depth -= 1
                return offset
            if tag != ITEM:
                raise Truncated(f"expected an item at byte {pos}, found tag {tag:08X}")
            pos = self.skip_nested(offset) if length == UNDEFINED else self.skip_value(offset,
                                                                                      length)

    def skip_nested(self, pos: int) -> int:
        """The elements of an undefined-length item, up to its item delimiter."""
        while True:
            tag, offset, length = self.header(pos)
            if tag == ITEM_END:
                return offset
            pos = self.skip_value(offset, length)
