"""GPT-2's reversible byte <-> printable-character mapping used by byte-level BPE.

BPE vocabularies are strings, yet byte-level BPE must be able to spell every byte sequence. GPT-2 maps each of the
256 byte values to a visible Unicode character: the 188 printable Latin-1 bytes map to themselves, the others
(control bytes, space, 0x7F-0xA0, 0xAD) to U+0100, U+0101, ... in byte order. So a space becomes 'Ġ' and a newline
'Ċ', and every token is a plain string of such characters.
"""
from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
    """byte value -> the character that stands for it in vocab strings."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR: dict[int, str] = bytes_to_unicode()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}

# str.translate table applied to text decoded as Latin-1 (one char per byte): the whole mapping in one C call.
_LATIN1_TO_BYTE_CHARS = {b: c for b, c in BYTE_TO_CHAR.items()}


def to_byte_chars(text: str) -> str:
    """UTF-8 encode `text` and spell each byte with its GPT-2 character."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_CHARS)


def token_bytes(token: str) -> bytes:
    """Bytes a vocab string stands for. Like HF's ByteLevel decoder, a string with any character outside the
    256-character alphabet (e.g. an added token such as '<|im end|>' written with a real space) is taken
    literally as UTF-8."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return token.encode("utf-8")
