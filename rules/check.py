"""`pantau rules check`: every problem of a pack as file:line:col; runs the rules' own examples."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from models.features import SCHEMA
from rules.engine import (
    CompiledExpression,
    ExpressionError,
    batch_columns,
    check_value,
    compile_expression,
    example_row,
    suggest,
)
from rules.pack import Located, PackError, RulePack, parse_pack


@dataclass
class Problem:
    """One finding, printed as file:line:col: message."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


@dataclass
class CheckResult:
    """What a check found: problems (the pack is refused if any), notes, examples run."""

    pack: RulePack | None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    examples_run: int = 0

    @property
    def ok(self) -> bool:
        return self.pack is not None and not self.problems


def _expression_position(
    located: Located, lines: list[str], index: int, line: int, column: int
) -> tuple[int, int]:
    """A position inside a rule's expression → a position in the file."""
    start_line, start_col, style = located.where(index, "expression")
    if style in {"|", ">"}:
        file_line = start_line + line  # block scalars start on the line after the indicator
        first = lines[start_line] if start_line < len(lines) else ""
        indent = len(first) - len(first.lstrip(" "))
        return file_line, indent + column
    offset = 1 if style in {'"', "'"} else 0
    if line == 1:
        return start_line, start_col + offset + column - 1
    return start_line + line - 1, column


# Functions the CEL runtime provides (common-expression-language's built-in standard library).
CEL_FUNCTIONS = {
    "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string",
    "bytes", "bool", "timestamp", "duration", "type", "dyn", "has", "exists", "all",
    "exists_one", "map", "filter", "max", "min", "getFullYear", "getMonth", "getDayOfMonth",
    "getDayOfYear", "getDayOfWeek", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    "getDate",
}  # fmt: skip


def _undefined_function(compiled: CompiledExpression) -> str | None:
    """The first function the expression calls that CEL does not provide."""
    for name in compiled.program.functions():
        if name[:1] in {"_", "@", "!"}:
            continue  # operators
        if name not in CEL_FUNCTIONS:
            return str(name)
    return None


def _first(source: str, name: str) -> tuple[int, int]:
    at = source.find(name)
    if at < 0:
        return 1, 1
    before = source[:at]
    return before.count("\n") + 1, at - (before.rfind("\n") + 1) + 1


def _check_reason(template: str) -> str | None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"reason: {exc}"
    for name in fields:
        if name not in SCHEMA:
            return (
                f"reason: unknown name '{{{name}}}'{suggest(name)} (only plain names may be used)"
            )
    return None


def check_located(located: Located, text: str) -> CheckResult:
    """Check a parsed pack: expressions, names, types, duplicate ids, reasons, examples."""
    pack = located.pack
    result = CheckResult(pack=pack)
    lines = text.splitlines()
    path = located.path
    seen: dict[str, int] = {}
    for index, rule in enumerate(pack.rules):
        rule_line, rule_col, _ = located.where(index, "id")
        if rule.id in seen:
            result.problems.append(
                Problem(
                    path,
                    rule_line,
                    rule_col,
                    f"duplicate rule id '{rule.id}' (first at line {seen[rule.id]})",
                )
            )
        else:
            seen[rule.id] = rule_line
        try:
            compiled = compile_expression(rule.expression)
        except ExpressionError as exc:
            line, col = _expression_position(located, lines, index, exc.line, exc.column)
            result.problems.append(Problem(path, line, col, f"rule {rule.id}: {exc.message}"))
            continue
        if compiled.vector is None:
            unknown = _undefined_function(compiled)
            if unknown:
                line, col = _expression_position(
                    located, lines, index, *_first(rule.expression, unknown)
                )
                hint = suggest(unknown, sorted(CEL_FUNCTIONS))
                result.problems.append(
                    Problem(path, line, col, f"rule {rule.id}: unknown function '{unknown}'{hint}")
                )
                continue
            result.notes.append(
                f"rule {rule.id}: runs row by row through CEL ({compiled.fallback_reason}); "
                "same answers, slower"
            )
        if rule.reason:
            problem = _check_reason(rule.reason)
            if problem:
                line, col, _ = located.where(index, "reason")
                result.problems.append(Problem(path, line, col, f"rule {rule.id}: {problem}"))
        _run_examples(located, index, compiled, result)
    if not pack.rules:
        result.notes.append("the pack has no rules: decisions come from the model alone")
    return result


def _run_examples(
    located: Located, index: int, compiled: CompiledExpression, result: CheckResult
) -> None:
    rule = located.pack.rules[index]
    line, col, _ = located.where(index, "examples")
    path = located.path
    if not rule.examples.match:
        result.notes.append(f"rule {rule.id}: no example that must match")
    for expected, examples in ((True, rule.examples.match), (False, rule.examples.no_match)):
        kind = "match" if expected else "no_match"
        for number, example in enumerate(examples, start=1):
            bad = [p for p in (check_value(k, v) for k, v in example.items()) if p]
            if bad:
                result.problems.append(
                    Problem(
                        path,
                        line,
                        col,
                        f"rule {rule.id}: {kind} example {number}: " + "; ".join(bad),
                    )
                )
                continue
            row = example_row(example)
            try:
                got = compiled.row(row)
            except (ExpressionError, TypeError, ValueError) as exc:
                message = getattr(exc, "message", None) or str(exc).split(". ")[0]
                result.problems.append(
                    Problem(
                        path,
                        line,
                        col,
                        f"rule {rule.id}: {kind} example {number}: type error: {message}",
                    )
                )
                continue
            result.examples_run += 1
            if compiled.vector is not None:
                vector = bool(
                    compiled.batch(batch_columns([row], set(compiled.names)), [row], 1)[0]
                )
                if vector != got:
                    result.problems.append(
                        Problem(
                            path,
                            line,
                            col,
                            f"rule {rule.id}: {kind} example {number}: "
                            f"CEL says {got}, the batch path {vector} (please report)",
                        )
                    )
            if got != expected:
                verb = "should match but does not" if expected else "should not match but does"
                result.problems.append(
                    Problem(
                        path,
                        line,
                        col,
                        f"rule {rule.id}: {kind} example {number} {verb}: {example}",
                    )
                )


def check_text(text: str, path: str = "<pack>") -> CheckResult:
    """Check a pack given as YAML text."""
    try:
        located = parse_pack(text, path)
    except PackError as exc:
        result = CheckResult(pack=None)
        for problem in exc.problems:
            where, _, message = problem.partition(": ")
            parts = where.rsplit(":", 2)
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                result.problems.append(Problem(parts[0], int(parts[1]), int(parts[2]), message))
            else:
                result.problems.append(Problem(path, 1, 1, problem))
        return result
    return check_located(located, text)


def check_file(path: Path) -> CheckResult:
    """Check a pack file (OSError when it cannot be read)."""
    return check_text(path.read_text(encoding="utf-8"), str(path))


def check_pack(pack: RulePack) -> CheckResult:
    """Check a pack that arrived as a value (pantau.rules): positions are the pack's own."""
    import yaml

    text = yaml.safe_dump(
        pack.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True
    )
    return check_text(text, f"pantau.rules/{pack.label}")
