"""A byte-level replica of rapidjson's reader (default flags), used only to explain a failure.

Alternator parses request bodies with rapidjson's ``GenericReader`` and ``kParseDefaultFlags``
(``utils/rjson.hh`` defines no ``RAPIDJSON_PARSE_DEFAULT_FLAGS``): no NaN/Infinity, no
comments, no trailing commas, normal-precision numbers. Python's ``json`` is fast but disagrees
on what is an error (lone surrogate escapes, numbers too big for a double) and on where an
error is (the start of a bad literal instead of the first wrong byte). :func:`scan` walks the
bytes the way rapidjson's ``ParseValue``/``ParseObject``/``ParseString``/``ParseNumber`` do and
returns the first error in stream order, with rapidjson's message and byte offset (its
``Tell()``). It is only called when Python's parser failed or a body holds something Python
accepts and rapidjson may not, so the common request never pays for a Python-level loop.

A NUL byte reads as the end of input, as rjson's ``chunked_content_stream.Peek()`` makes it.
"""

from __future__ import annotations

import re

MAX_NESTING = 78  # rjson's default_max_nested_level

# rapidjson/error/en.h (GetParseError_En), current texts.
DOCUMENT_EMPTY = "The document is empty."
ROOT_NOT_SINGULAR = "The document root must not be followed by other values."
VALUE_INVALID = "Invalid value."
OBJECT_MISS_NAME = "Missing a name for object member."
OBJECT_MISS_COLON = "Missing a colon after a name of object member."
OBJECT_MISS_COMMA = "Missing a comma or '}' after an object member."
ARRAY_MISS_COMMA = "Missing a comma or ']' after an array element."
BAD_HEX = "Incorrect hex digit after \\u escape in string."
BAD_SURROGATE = "The surrogate pair in string is invalid."
BAD_ESCAPE = "Invalid escape character in string."
MISS_QUOTE = "Missing a closing quotation mark in string."
BAD_ENCODING = "Invalid encoding in string."
NUMBER_TOO_BIG = "Number too big to be stored in double."
MISS_FRACTION = "Miss fraction part in number."
MISS_EXPONENT = "Miss exponent in number."

_DBL_MAX = 1.7976931348623157e308
_WS = b" \n\r\t"
_ESCAPES = frozenset(b'"\\/bfnrt')
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_PLAIN = re.compile(rb'[^"\\\x00-\x1f\x80-\xff]*')  # string bytes needing no attention


class ParseError(Exception):
    """``message`` is rapidjson's text, ``offset`` the byte offset it reports; ``nesting``
    marks rjson's own depth error (raised from the handler, so it has no offset)."""

    def __init__(self, message: str, offset: int = 0, *, nesting: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.nesting = nesting


def _utf8_len(data: bytes, i: int) -> int:
    """Length of the valid UTF-8 sequence at ``data[i]`` (a byte >= 0x80), or 0 if invalid."""
    lead = data[i]
    if 0xC2 <= lead <= 0xDF:
        n = 2
    elif 0xE0 <= lead <= 0xEF:
        n = 3
    elif 0xF0 <= lead <= 0xF4:
        n = 4
    else:
        return 0
    try:
        data[i : i + n].decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return n


class _Reader:
    def __init__(self, data: bytes) -> None:
        nul = data.find(0)
        self.data = data if nul < 0 else data[:nul]
        self.n = len(self.data)
        self.pos = 0
        self.depth = 0

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < self.n else 0

    def skip_ws(self) -> None:
        data, pos, n = self.data, self.pos, self.n
        while pos < n and data[pos] in _WS:
            pos += 1
        self.pos = pos

    def document(self) -> int:
        self.skip_ws()
        if self.peek() == 0:
            raise ParseError(DOCUMENT_EMPTY, self.pos)
        self.value()
        self.skip_ws()
        if self.peek() != 0:
            raise ParseError(ROOT_NOT_SINGULAR, self.pos)
        return self.n

    def value(self) -> None:
        c = self.peek()
        if c == 0x6E:  # n
            self.literal(b"null")
        elif c == 0x74:  # t
            self.literal(b"true")
        elif c == 0x66:  # f
            self.literal(b"false")
        elif c == 0x22:
            self.string()
        elif c == 0x7B:
            self.container(0x7D)
        elif c == 0x5B:
            self.container(0x5D)
        else:
            self.number()

    def literal(self, word: bytes) -> None:
        self.pos += 1
        for expected in word[1:]:
            if self.peek() != expected:
                raise ParseError(VALUE_INVALID, self.pos)
            self.pos += 1

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ParseError(f"Max nested level reached: {MAX_NESTING}", nesting=True)

    def container(self, close: int) -> None:
        # Iterative over nesting would be needed beyond 78 levels, which _enter refuses first.
        is_object = close == 0x7D
        self.pos += 1
        self._enter()
        self.skip_ws()
        if self.peek() == close:
            self.pos += 1
            self.depth -= 1
            return
        while True:
            if is_object:
                if self.peek() != 0x22:
                    raise ParseError(OBJECT_MISS_NAME, self.pos)
                self.string()
                self.skip_ws()
                if self.peek() != 0x3A:
                    raise ParseError(OBJECT_MISS_COLON, self.pos)
                self.pos += 1
                self.skip_ws()
            self.value()
            self.skip_ws()
            c = self.peek()
            if c == 0x2C:
                self.pos += 1
                self.skip_ws()
            elif c == close:
                self.pos += 1
                self.depth -= 1
                return
            else:
                raise ParseError(OBJECT_MISS_COMMA if is_object else ARRAY_MISS_COMMA, self.pos)

    def hex4(self, escape_at: int) -> int:
        code = 0
        for _ in range(4):
            c = self.peek()
            if c not in _HEX:
                raise ParseError(BAD_HEX, escape_at)
            code = code * 16 + int(chr(c), 16)
            self.pos += 1
        return code

    def string(self) -> None:
        data = self.data
        self.pos += 1  # the opening quote
        while True:
            self.pos = _PLAIN.match(data, self.pos).end()  # type: ignore[union-attr]
            c = self.peek()
            if c == 0x5C:  # backslash
                escape_at = self.pos
                self.pos += 1
                e = self.peek()
                if e in _ESCAPES:
                    self.pos += 1
                elif e == 0x75:  # u
                    self.pos += 1
                    code = self.hex4(escape_at)
                    if 0xD800 <= code <= 0xDFFF:
                        if code > 0xDBFF:  # a lone low surrogate
                            raise ParseError(BAD_SURROGATE, escape_at)
                        if self.peek() != 0x5C:
                            raise ParseError(BAD_SURROGATE, escape_at)
                        self.pos += 1
                        if self.peek() != 0x75:
                            raise ParseError(BAD_SURROGATE, escape_at)
                        self.pos += 1
                        low = self.hex4(escape_at)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise ParseError(BAD_SURROGATE, escape_at)
                else:
                    raise ParseError(BAD_ESCAPE, escape_at)
            elif c == 0x22:
                self.pos += 1
                return
            elif c == 0:
                raise ParseError(MISS_QUOTE, self.pos)
            elif c < 0x20:
                raise ParseError(BAD_ENCODING, self.pos)
            else:  # a byte >= 0x80; rjson takes it as is, the emulator checks UTF-8 here
                n = _utf8_len(data, self.pos)
                if n == 0:
                    raise ParseError(BAD_ENCODING, self.pos)
                self.pos += n

    def number(self) -> None:
        """rapidjson's ``ParseNumber`` (normal precision) for the errors it can raise."""
        start = self.pos
        if self.peek() == 0x2D:
            self.pos += 1
        c = self.peek()
        digits_at = self.pos
        if c == 0x30:
            self.pos += 1
        elif 0x31 <= c <= 0x39:
            while self.peek() in _DIGITS:
                self.pos += 1
        else:
            raise ParseError(VALUE_INVALID, self.pos)
        int_digits = self.data[digits_at : self.pos]
        exp_frac = 0
        if self.peek() == 0x2E:
            self.pos += 1
            if self.peek() not in _DIGITS:
                raise ParseError(MISS_FRACTION, self.pos)
            frac_at = self.pos
            while self.peek() in _DIGITS:
                self.pos += 1
            exp_frac = -_significant_fraction_digits(int_digits, self.data[frac_at : self.pos])
        if self.peek() in (0x65, 0x45):  # e E
            self.pos += 1
            minus = False
            if self.peek() in (0x2B, 0x2D):
                minus = self.peek() == 0x2D
                self.pos += 1
            if self.peek() not in _DIGITS:
                raise ParseError(MISS_EXPONENT, self.pos)
            exp = self.peek() - 0x30
            self.pos += 1
            max_exp = 308 - exp_frac
            while self.peek() in _DIGITS:
                exp = exp * 10 + self.peek() - 0x30
                self.pos += 1
                if not minus and exp > max_exp:
                    raise ParseError(NUMBER_TOO_BIG, start)
        # Whatever the path (a big integer accumulated in a double, or a fraction/exponent),
        # a result beyond DBL_MAX is refused at the number's start.
        if abs(float(self.data[start : self.pos])) > _DBL_MAX:
            raise ParseError(NUMBER_TOO_BIG, start)


def _significant_fraction_digits(int_digits: bytes, frac: bytes) -> int:
    """How many fraction digits rapidjson folds into its significand (each one lowers the
    exponent): digits while the significand stays under 2^53, then up to 17 significant."""
    i64 = int(int_digits) if len(int_digits) <= 20 else 1 << 64
    count = 0
    significant = len(int_digits.lstrip(b"0"))
    rest = frac
    if i64 < 1 << 64:
        taken = 0
        for ch in frac:
            if i64 > (1 << 53) - 1:
                break
            i64 = i64 * 10 + ch - 0x30
            taken += 1
            if i64:
                significant += 1
        count += taken
        rest = frac[taken:]
    for ch in rest:
        if significant < 17:
            count += 1
            if ch != 0x30 or significant:
                significant += 1
    return count


def scan(data: bytes) -> int:
    """Raise :class:`ParseError` for the first error rapidjson would report in ``data``;
    otherwise return where the document ends (a NUL byte ends it early)."""
    return _Reader(data).document()


# Python's json accepts an escape in the surrogate range; rapidjson refuses a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def suspect(data: bytes) -> bool:
    """True when ``data`` has a surrogate escape rapidjson might refuse (cheap, raw bytes).
    Numbers rapidjson refuses are caught by the parser's number hooks instead."""
    return b"\\u" in data and _SURROGATE_ESCAPE.search(data) is not None
