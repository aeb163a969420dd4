"""Rule expressions: CEL programs for reference and checking, compiled to numpy for micro-batches.

Every expression is CEL (common-expression-language). It is compiled twice from the same text:
once by CEL itself (`cel.compile`: syntax errors, the reference semantics, row-by-row evaluation)
and once into numpy column operations, from the syntax tree of cel-python's CEL grammar
(`celpy.celparser`), so a micro-batch of 500 rows costs a few numpy calls per rule instead of
500 CEL calls. Constructs the numpy path does not cover run row by row through CEL: same answers,
slower. Static types come from the feature schema, so mixing types is caught before a pack runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel
import numpy as np
from lark import Token, Tree

from models.features import SCHEMA, columns, defaults

Column = Any  # a numpy array or a scalar that broadcasts
VectorFn = Callable[[Mapping[str, np.ndarray]], Column]
NUMERIC = {"int", "double"}


class ExpressionError(Exception):
    """A problem in an expression, at a 1-based line and column of the expression text."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class Unsupported(Exception):
    """A construct the numpy path does not compile: the rule runs row by row through CEL."""


def suggest(name: str, known: Sequence[str] | None = None) -> str:
    """' (did you mean x?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, list(known or SCHEMA), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _pos(node: Tree | Token) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    meta = node.meta
    return getattr(meta, "line", 1), getattr(meta, "column", 1)


def _literal(token: Token) -> tuple[str, Any]:
    kind = token.type
    if kind in {"UINT_LIT", "BYTES_LIT", "NULL_LIT"}:
        raise Unsupported(kind)
    value = cel.evaluate(str(token))  # CEL itself decodes its literals
    if kind == "INT_LIT":
        return "int", int(value)
    if kind == "FLOAT_LIT":
        return "double", float(value)
    if kind == "BOOL_LIT":
        return "bool", bool(value)
    return "string", str(value)


_CMP = {
    "relation_lt": np.less,
    "relation_le": np.less_equal,
    "relation_gt": np.greater,
    "relation_ge": np.greater_equal,
    "relation_eq": np.equal,
    "relation_ne": np.not_equal,
}
_ARITH = {"addition_add": np.add, "addition_sub": np.subtract, "multiplication_mul": np.multiply}


@dataclass
class Typed:
    """A compiled node: its CEL type, a column function, and a constant value when it is literal."""

    kind: str
    fn: VectorFn
    const: Any = None
    is_const: bool = False
    names: set[str] = field(default_factory=set)


def _const(kind: str, value: Any) -> Typed:
    def constant(cols: Mapping[str, np.ndarray]) -> Column:
        return value

    return Typed(kind, constant, value, True)


class VectorCompiler:
    """Turns a cel-python syntax tree into a numpy function over typed columns."""

    def __init__(self, schema: Mapping[str, str]) -> None:
        self.schema = schema

    def compile(self, tree: Tree) -> Typed:
        return self._node(tree)

    def _node(self, node: Tree | Token) -> Typed:
        if isinstance(node, Token):
            raise Unsupported(node.type)
        handler = getattr(self, f"_{node.data}", None)
        if handler is None:
            raise Unsupported(str(node.data))
        result: Typed = handler(node)
        return result

    def _single(self, node: Tree) -> Typed:
        if len(node.children) != 1:
            raise Unsupported(str(node.data))
        return self._node(node.children[0])

    _member = _single
    _primary = _single
    _paren_expr = _single

    def _expr(self, node: Tree) -> Typed:
        if len(node.children) == 1:
            return self._node(node.children[0])
        cond, yes, no = (self._node(c) for c in node.children)
        if cond.kind != "bool":
            raise ExpressionError(f"condition of ?: must be bool, is {cond.kind}", *_pos(node))
        if yes.kind != no.kind:
            raise ExpressionError(
                f"both branches of ?: must have one type (got {yes.kind} and {no.kind})",
                *_pos(node),
            )
        c, a, b = cond.fn, yes.fn, no.fn
        return Typed(
            yes.kind,
            lambda cols: np.where(c(cols), a(cols), b(cols)),
            names=cond.names | yes.names | no.names,
        )

    def _logic(self, node: Tree, op: str, ufunc: Any) -> Typed:
        if len(node.children) == 1:
            return self._node(node.children[0])
        left, right = (self._node(c) for c in node.children)
        for side in (left, right):
            if side.kind != "bool":
                raise ExpressionError(f"{op} needs bool operands, got {side.kind}", *_pos(node))
        lf, rf = left.fn, right.fn
        return Typed("bool", lambda cols: ufunc(lf(cols), rf(cols)), names=left.names | right.names)

    def _conditionalor(self, node: Tree) -> Typed:
        return self._logic(node, "||", np.logical_or)

    def _conditionaland(self, node: Tree) -> Typed:
        return self._logic(node, "&&", np.logical_and)

    def _relation(self, node: Tree) -> Typed:
        if len(node.children) == 1:
            return self._node(node.children[0])
        op_node, right_node = node.children
        assert isinstance(op_node, Tree)
        left = self._node(op_node.children[0])
        right = self._node(right_node)
        where = _pos(op_node)
        names = left.names | right.names
        if op_node.data == "relation_in":
            if not (right.is_const and isinstance(right.const, tuple)):
                raise Unsupported("in over a non-literal list")
            kinds = {k for k, _ in right.const}
            if kinds and not (kinds <= {left.kind} or (kinds | {left.kind}) <= NUMERIC):
                raise ExpressionError(
                    f"'in' compares {left.kind} with a list of {', '.join(sorted(kinds))}", *where
                )
            values = [v for _, v in right.const]
            lf = left.fn
            return Typed("bool", lambda cols: np.isin(lf(cols), values), names=names)
        ufunc = _CMP[str(op_node.data)]
        same = left.kind == right.kind or {left.kind, right.kind} <= NUMERIC
        if not same:
            raise ExpressionError(f"cannot compare {left.kind} with {right.kind}", *where)
        if left.kind == "bool" and op_node.data not in {"relation_eq", "relation_ne"}:
            raise Unsupported("ordering of bools")
        lf, rf = left.fn, right.fn
        return Typed("bool", lambda cols: ufunc(lf(cols), rf(cols)), names=names)

    def _arith(self, node: Tree) -> Typed:
        if len(node.children) == 1:
            return self._node(node.children[0])
        op_node, right_node = node.children
        assert isinstance(op_node, Tree)
        left = self._node(op_node.children[0])
        right = self._node(right_node)
        where = _pos(op_node)
        op = str(op_node.data)
        if left.kind not in NUMERIC or right.kind not in NUMERIC:
            if left.kind == right.kind == "string" and op == "addition_add":
                raise Unsupported("string concatenation")
            raise ExpressionError(
                f"arithmetic needs numbers, got {left.kind} and {right.kind}", *where
            )
        if left.kind != right.kind:
            raise ExpressionError(
                f"CEL does not mix int and double in arithmetic ({left.kind} and {right.kind}): "
                "write 2.0 rather than 2, or double(x)",
                *where,
            )
        lf, rf = left.fn, right.fn
        names = left.names | right.names
        if op == "multiplication_div":
            # CEL errors on int division by zero and on comparing NaN; leave those to CEL.
            raise Unsupported("division")
        if op == "multiplication_mod":
            raise Unsupported("%")
        ufunc = _ARITH[op]
        return Typed(left.kind, lambda cols: ufunc(lf(cols), rf(cols)), names=names)

    _addition = _arith
    _multiplication = _arith

    def _unary(self, node: Tree) -> Typed:
        if len(node.children) == 1:
            return self._node(node.children[0])
        op, operand_node = node.children
        operand = self._node(operand_node)
        assert isinstance(op, Tree)
        of = operand.fn
        if op.data == "unary_not":
            if operand.kind != "bool":
                raise ExpressionError(f"! needs a bool, got {operand.kind}", *_pos(node))
            return Typed("bool", lambda cols: np.logical_not(of(cols)), names=operand.names)
        if operand.kind not in NUMERIC:
            raise ExpressionError(f"- needs a number, got {operand.kind}", *_pos(node))
        return Typed(operand.kind, lambda cols: np.negative(of(cols)), names=operand.names)

    def _ident(self, node: Tree) -> Typed:
        token = node.children[0]
        name = str(token)
        kind = self.schema.get(name)
        if kind is None:
            raise ExpressionError(
                f"unknown name '{name}'{suggest(name, list(self.schema))}", *_pos(node)
            )

        def column(cols: Mapping[str, np.ndarray]) -> Column:
            return cols[name]

        return Typed(kind, column, names={name})

    def _literal(self, node: Tree) -> Typed:
        token = node.children[0]
        assert isinstance(token, Token)
        kind, value = _literal(token)
        return _const(kind, value)

    def _list_lit(self, node: Tree) -> Typed:
        items: list[tuple[str, Any]] = []
        for exprlist in node.children:
            assert isinstance(exprlist, Tree)
            for child in exprlist.children:
                item = self._node(child)
                if not item.is_const:
                    raise Unsupported("list of non-literals")
                items.append((item.kind, item.const))
        return _const("list", tuple(items))

    def _member_dot_arg(self, node: Tree) -> Typed:
        target_node, method, *rest = node.children
        target = self._node(target_node)
        name = str(method)
        if name not in {"startsWith", "endsWith", "contains"} or target.kind != "string":
            raise Unsupported(f".{name}()")
        args: list[Typed] = []
        for exprlist in rest:
            assert isinstance(exprlist, Tree)
            args.extend(self._node(c) for c in exprlist.children)
        if len(args) != 1 or not args[0].is_const or args[0].kind != "string":
            raise Unsupported(f".{name}() with a non-literal argument")
        needle = str(args[0].const)
        tf = target.fn

        def call(cols: Mapping[str, np.ndarray]) -> Column:
            text = np.asarray(tf(cols)).astype(str)
            if name == "startsWith":
                return np.char.startswith(text, needle)
            if name == "endsWith":
                return np.char.endswith(text, needle)
            return np.char.find(text, needle) >= 0

        return Typed("bool", call, names=target.names)

    def _ident_arg(self, node: Tree) -> Typed:
        func, *rest = node.children
        args: list[Typed] = []
        for exprlist in rest:
            assert isinstance(exprlist, Tree)
            args.extend(self._node(c) for c in exprlist.children)
        if str(func) == "double" and len(args) == 1 and args[0].kind == "int":
            af = args[0].fn
            return Typed(
                "double", lambda cols: np.asarray(af(cols), dtype=np.float64), names=args[0].names
            )
        raise Unsupported(f"{func}()")


_PARSER: Any = None


def syntax_tree(source: str) -> Tree:
    """The cel-python syntax tree of an expression (already accepted by cel.compile)."""
    global _PARSER
    if _PARSER is None:
        from celpy.celparser import CELParser

        _PARSER = CELParser()
    tree: Tree = _PARSER.parse(source)
    return tree


def parse_cel_error(message: str) -> tuple[int, int, str]:
    """(line, column, message) out of a CEL syntax error ('ERROR: <input>:1:11: …')."""
    import re

    found = re.search(r"<input>:(\d+):(\d+): (.*)", message)
    if not found:
        return 1, 1, message.strip().splitlines()[0]
    return int(found.group(1)), int(found.group(2)), found.group(3).strip()


@dataclass
class CompiledExpression:
    """One expression compiled both ways."""

    source: str
    program: Any  # cel.Program
    names: list[str]
    vector: VectorFn | None
    fallback_reason: str | None = None
    errors: int = 0  # rows CEL could not evaluate (counted as no match)

    def row(self, values: Mapping[str, Any]) -> bool:
        """CEL's answer for one row (the reference semantics)."""
        result = self.program.execute({n: values[n] for n in self.names})
        if not isinstance(result, bool):
            raise ExpressionError(f"expression must be bool, evaluated to {type(result).__name__}")
        return result

    def batch(
        self, cols: Mapping[str, np.ndarray], rows: Sequence[Mapping[str, Any]], n: int
    ) -> np.ndarray:
        """Answers for a micro-batch: numpy when compiled, else CEL row by row (a row CEL cannot
        evaluate, e.g. an integer division by zero, does not match; `errors` counts them)."""
        if self.vector is not None:
            return np.broadcast_to(np.asarray(self.vector(cols), dtype=bool), (n,))
        out = np.zeros(n, dtype=bool)
        for j, row in enumerate(rows):
            try:
                out[j] = self.row(row)
            except (TypeError, ValueError, ExpressionError, ZeroDivisionError):
                self.errors += 1
        return out


def compile_expression(source: str, schema: Mapping[str, str] | None = None) -> CompiledExpression:
    """Compile an expression; raises ExpressionError (line, column within the expression)."""
    schema = schema if schema is not None else SCHEMA
    try:
        program = cel.compile(source)
    except ValueError as exc:
        line, col, message = parse_cel_error(str(exc))
        raise ExpressionError(message, line, col) from None
    names = program.variables()
    for name in names:
        if name not in schema:
            raise ExpressionError(
                f"unknown name '{name}'{suggest(name, list(schema))}", *_find(source, name)
            )
    vector: VectorFn | None = None
    reason: str | None = None
    try:
        typed = VectorCompiler(schema).compile(syntax_tree(source))
        if typed.kind != "bool":
            raise ExpressionError(f"expression must be bool, is {typed.kind}")
        vector = typed.fn
    except Unsupported as exc:
        reason = str(exc)
    return CompiledExpression(source, program, names, vector, reason)


def _find(source: str, name: str) -> tuple[int, int]:
    import re

    found = re.search(rf"\b{re.escape(name)}\b", source)
    if not found:
        return 1, 1
    before = source[: found.start()]
    return before.count("\n") + 1, found.start() - (before.rfind("\n") + 1) + 1


def example_row(example: Mapping[str, Any]) -> dict[str, Any]:
    """An example's values over the zero value of every name (numbers coerced to their type)."""
    row = defaults()
    for name, value in example.items():
        kind = SCHEMA.get(name)
        if kind == "double" and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        row[name] = value
    return row


def check_value(name: str, value: Any) -> str | None:
    """Why an example value does not fit its name's type, or None."""
    kind = SCHEMA.get(name)
    if kind is None:
        return f"unknown name '{name}'{suggest(name)}"
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "string": isinstance(value, str),
    }[kind]
    return None if ok else f"{name} must be {kind}, got {value!r}"


def batch_columns(rows: Sequence[dict[str, Any]], names: set[str]) -> dict[str, np.ndarray]:
    """Typed columns of just the names a pack reads."""
    return columns(rows, sorted(names))


@dataclass
class CompiledRule:
    """A pack's rule with its expression compiled."""

    rule: Any  # rules.pack.Rule
    expression: CompiledExpression


class CompiledPack:
    """A checked pack ready to evaluate micro-batches: hits[i, j] = rule i matched row j."""

    def __init__(self, pack: Any) -> None:
        self.pack = pack
        self.rules = [CompiledRule(r, compile_expression(r.expression)) for r in pack.rules]
        self.names: set[str] = set()
        for compiled in self.rules:
            self.names.update(compiled.expression.names)

    @property
    def label(self) -> str:
        """The pack's version label, e.g. core-7."""
        return str(self.pack.label)

    def evaluate(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """Boolean matrix (rules × rows) for a micro-batch of feature rows."""
        n = len(rows)
        cols = batch_columns(rows, self.names)
        out = np.zeros((len(self.rules), n), dtype=bool)
        for i, compiled in enumerate(self.rules):
            out[i] = compiled.expression.batch(cols, rows, n)
        return out

    def evaluate_rows(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """The same matrix through CEL row by row (the reference; slow)."""
        out = np.zeros((len(self.rules), len(rows)), dtype=bool)
        for i, compiled in enumerate(self.rules):
            for j, row in enumerate(rows):
                out[i, j] = compiled.expression.row(row)
        return out


__all__ = [
    "CompiledExpression",
    "CompiledPack",
    "ExpressionError",
    "batch_columns",
    "check_value",
    "compile_expression",
    "example_row",
    "suggest",
]
