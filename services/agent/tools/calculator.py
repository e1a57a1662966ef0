"""Arithmetic without `eval`: an AST walk over numbers and + - * / // % **.

Sizes are checked before each operation, so `9**9**9` or a huge product is refused
instead of freezing the event loop or eating memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from pydantic import BaseModel, Field

import llm_tasks
from services.agent.tools.base import Tool, ToolError

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
MAX_RESULT_BITS = 4096
MAX_DEPTH = 50

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorArgs(BaseModel):
    expression: str = Field(description="An arithmetic expression, e.g. 12*(3+4) or 2**10")


def _bits(value: Number) -> float:
    if isinstance(value, int):
        return value.bit_length()
    return math.log2(abs(value)) if value and math.isfinite(value) else 0.0


def _check_size(op: type[ast.operator], left: Number, right: Number) -> None:
    if op is ast.Pow:
        if abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponents are limited to {MAX_EXPONENT}")
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right * _bits(left) > MAX_RESULT_BITS:
            raise ToolError("the result would be too large")
    elif op is ast.Mult and _bits(left) + _bits(right) > MAX_RESULT_BITS:
        raise ToolError("the result would be too large")


def _evaluate(node: ast.AST, depth: int = 0) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError("the expression is nested too deeply")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        _check_size(type(node.op), left, right)
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result would be too large") from None
    raise ToolError("only numbers and + - * / // % ** and parentheses are allowed")


def format_number(value: Number) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def calculate(expression: str) -> str:
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expressions are limited to {MAX_EXPRESSION_CHARS} characters")
    # People write powers as ^; Python would read it as XOR.
    source = expression.replace("^", "**").strip()
    if not source:
        raise ToolError("the expression is empty")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise ToolError(f"{expression!r} is not an arithmetic expression") from None
    return format_number(_evaluate(tree))


async def _run(args: CalculatorArgs) -> str:
    return calculate(args.expression)


CALCULATOR = Tool(
    name=llm_tasks.CALCULATOR,
    description="Evaluates an arithmetic expression exactly. Use it for any calculation.",
    args_schema=CalculatorArgs,
    run=_run,
)
