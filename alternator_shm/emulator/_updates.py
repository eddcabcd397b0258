"""Which ``:values`` of an UpdateExpression Alternator always evaluates as numbers.

Alternator range-checks a number (``Number overflow/underflow/too precise``) only where it
parses one with ``parse_and_validate_number`` (scylladb/scylladb alternator/serialization.cc):
when it stores a top-level ``N`` value (``serialize_item``), and in ``unwrap_number``, which
``number_add``/``number_subtract`` use for ``+``, ``-`` and ``ADD``. An expression value is
therefore range-checked when the update stores it as an attribute (``SET a = :v``), adds or
subtracts it (``SET a = b + :v``) or ADDs it (``ADD a :v``). Elsewhere it is not, or only
depending on the stored item (a comparison with a number attribute in a condition,
``if_not_exists``, a nested path ``SET a.b = :v`` whose map is stored as JSON): those are not
modelled, and the emulator only checks their syntax.

A small tokenizer, not Alternator's grammar: an expression it cannot follow yields fewer names
(never a wrong range error for a value Alternator would not evaluate).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"\s*(?:(?P<value>:[A-Za-z0-9_]+)|(?P<name>#?[A-Za-z0-9_]+)|(?P<punct>[=+\-,()\[\].]))"
)
_CLAUSES = frozenset({"SET", "REMOVE", "ADD", "DELETE"})


def _tokens(expression: str) -> list[tuple[str, str]] | None:
    out: list[tuple[str, str]] = []
    pos = 0
    end = len(expression.rstrip())
    while pos < end:
        match = _TOKEN.match(expression, pos)
        if match is None or match.end() == pos:
            return None  # something this tokenizer does not know: evaluate nothing
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _actions(tokens: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(clause, tokens of one action) pairs: actions split on commas outside parentheses."""
    actions: list[tuple[str, list[tuple[str, str]]]] = []
    clause = ""
    current: list[tuple[str, str]] = []
    depth = 0
    for kind, text in tokens:
        if kind == "name" and depth == 0 and text.upper() in _CLAUSES:
            if current:
                actions.append((clause, current))
            clause, current = text.upper(), []
        elif kind == "punct" and text == "," and depth == 0:
            actions.append((clause, current))
            current = []
        else:
            depth += (text == "(") - (text == ")") if kind == "punct" else 0
            current.append((kind, text))
    if current:
        actions.append((clause, current))
    return actions


def evaluated_numbers(expression: str) -> frozenset[str]:
    """The ``:names`` that ``expression`` always stores, adds or subtracts as a number."""
    tokens = _tokens(expression)
    if tokens is None:
        return frozenset()
    names: set[str] = set()
    for clause, action in _actions(tokens):
        if clause == "SET":
            try:
                eq = action.index(("punct", "="))
            except ValueError:
                continue
            path, operand = action[:eq], action[eq + 1 :]
            # SET a = :v stores the value as it is (a top-level attribute only).
            if len(path) == 1 and path[0][0] == "name" and [k for k, _ in operand] == ["value"]:
                names.add(operand[0][1])
            depth = 0
            arithmetic = any(t == ("punct", "+") or t == ("punct", "-") for t in operand)
            for kind, text in operand if arithmetic else ():
                if kind == "punct":
                    depth += (text == "(") - (text == ")")
                elif kind == "value" and depth == 0:  # an operand of + or -
                    names.add(text)
        elif clause == "ADD" and len(action) >= 2 and action[-1][0] == "value":
            names.add(action[-1][1])
    return frozenset(names)
