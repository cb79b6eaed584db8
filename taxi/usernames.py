"""The username rule: what a username may contain, its stored form, and the key that makes it unique.

Usernames appear in every trip payload, so one user must not be able to pose as another:

- the stored form is NFKC-normalised (composed and decomposed "é", fullwidth and plain letters are one name);
- it may hold only letters (Unicode category L), decimal digits (Nd) and ``@ . + - _`` (Django's rule, with
  numbers such as circled digits or Roman numerals left out): no control, format (bidi overrides, zero-width),
  space or combining characters;
- its letters and non-ASCII digits come from one script (Latin, Cyrillic, Greek, ...; Han, Hiragana, Katakana and
  Hangul count as one), so a Cyrillic "а" cannot stand in for a Latin "a";
- a Cyrillic or Greek name written only with letters that look like Latin ones ("Васо" reads as "Baco") is refused;
- uniqueness ignores case: ``key`` (NFKC, case-folded) is what the database keeps unique.

No I/O here: the schemas, the accounts service and the migrations all use these functions.
"""

from __future__ import annotations

import unicodedata

MAX_USERNAME = 150
PUNCTUATION = "@.+-_"
RULE = f"Letters and digits of one script, and {'/'.join(PUNCTUATION)} only (Unicode NFKC)."
# The same rule for OpenAPI (ECMA-262 regex with the u flag, as JSON Schema reads it; the one-script rule and
# the look-alike rule cannot be said in a pattern and are in the description).
PATTERN = r"^[\p{L}\p{Nd}@.+\-_]+$"

# One "script" for the writing systems that are normally mixed in one name.
_SCRIPT_ALIASES = {
    "CJK": "HAN",
    "IDEOGRAPHIC": "HAN",
    "HIRAGANA": "HAN",
    "KATAKANA": "HAN",
    "KATAKANA-HIRAGANA": "HAN",
    "HANGUL": "HAN",
    "BOPOMOFO": "HAN",
    "ARABIC-INDIC": "ARABIC",
    "EXTENDED": "ARABIC",  # EXTENDED ARABIC-INDIC DIGIT ...
}
# Cyrillic and Greek letters that look like a Latin letter (upper and lower case as they render).
_LATIN_LOOKALIKES = frozenset(
    "аеорсухіјѕһԁԛԝӏүАВЕКМНОРСТХІЈЅҮ"  # Cyrillic
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧακνορυχι"  # Greek
)


def normalize(name: str) -> str:
    """The stored form of a typed username (NFKC)."""
    return unicodedata.normalize("NFKC", name)


def key(name: str) -> str:
    """What uniqueness and log-in compare: the NFKC case-folded name (``Ana``, ``ANA`` and ``ａｎａ`` are one)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def script(char: str) -> str:
    """The writing system of a letter or digit, as its Unicode name says (``CYRILLIC SMALL LETTER A``)."""
    if "0" <= char <= "9":
        return ""  # ASCII digits go with every script
    word = unicodedata.name(char, "UNNAMED").split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(word, word)


def problems(name: str) -> list[str]:
    """Why a normalised username is not acceptable; empty when it is."""
    if len(name) > MAX_USERNAME:
        return [f"Ensure this field has no more than {MAX_USERNAME} characters."]
    bad = sorted({c for c in name if not (unicodedata.category(c) in _ALLOWED_CATEGORIES or c in PUNCTUATION)})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        return [f"Enter a valid username: letters, digits and {'/'.join(PUNCTUATION)} only (not {shown})."]
    scripts = sorted({s for c in name if c not in PUNCTUATION and (s := script(c))})
    if len(scripts) > 1:
        found = " and ".join(s.title() for s in scripts[:3])
        return [f"Enter a valid username: use the letters of one script, not a mix ({found})."]
    letters = [c for c in name if unicodedata.category(c).startswith("L")]
    if letters and scripts and scripts[0] in ("CYRILLIC", "GREEK") and all(c in _LATIN_LOOKALIKES for c in letters):
        return ["Enter a valid username: every letter looks like a Latin one; write it in Latin letters."]
    return []


_ALLOWED_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})
