"""Token text made readable inside bracketed sibling sets: whitespace shown, not rendered.

``[ a/\\n/ She]`` would break a line in the middle of a set; :func:`bracketed` writes it
``[ a/⏎/ She]``. Newlines, carriage returns and tabs always become symbols; spaces become ``␣`` only
in a sibling that is nothing but whitespace (a leading space before a word reads fine as it is); an
empty sibling shows as ``∅``. Plain text (``clean_text``) is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

SYMBOLS = {"\n": "⏎", "\r": "␍", "\t": "⇥"}
SPACE, EMPTY = "␣", "∅"


def visible_token(token: str) -> str:
    """One token with newlines / tabs as symbols, and spaces as ``␣`` when it is all whitespace."""
    if token == "":
        return EMPTY
    only_space = token.isspace()
    return "".join(SYMBOLS.get(c, SPACE if only_space and c.isspace() else c) for c in token)


def bracketed(tokens: Sequence[str], pruned: Sequence[bool] | None = None) -> str:
    """A step's siblings as ``[a/b/c]``, whitespace visible, pruned ones as ``~~b~~``; one token as itself."""
    if len(tokens) == 1:
        return tokens[0]
    pruned = [False] * len(tokens) if pruned is None else pruned
    shown = [f"~~{visible_token(t)}~~" if p else visible_token(t) for t, p in zip(tokens, pruned)]
    return "[" + "/".join(shown) + "]"
