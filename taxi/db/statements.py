"""SQL text written once, with ``{p}`` for each parameter, rendered for whichever backend runs it."""

from __future__ import annotations

__all__ = ["SQL"]


class SQL:
    """One statement. ``render`` gives the DB-API text (``%s`` or ``?`` markers), ``numbered`` the text for
    PostgreSQL's PREPARE. A ``name`` marks a hot read that PostgreSQL prepares once per connection.
    """

    __slots__ = ("_rendered", "name", "template")

    def __init__(self, template: str, name: str = "") -> None:
        self.template = template
        self.name = name
        self._rendered: dict[str, str] = {}

    def render(self, mark: str) -> str:
        """The text with every ``{p}`` replaced by ``mark``; rendered once per marker."""
        text = self._rendered.get(mark)
        if text is None:
            text = self._rendered[mark] = self.template.replace("{p}", mark)
        return text

    def numbered(self) -> str:
        """The text with $1, $2, ... for PREPARE."""
        parts = self.template.split("{p}")
        return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, start=1))

    def __repr__(self) -> str:
        return f"SQL({self.name or self.template[:40]!r})"
