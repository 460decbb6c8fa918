"""Field checks: `check(dotted, value)` raises ConfigError naming the field, the value and the fix.

The schema (sora_jax/config/schema.py) gives each field one of these; cross-field rules live in
sora_jax/config/validate.py.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from sora_jax.errors import ConfigError

Check = Callable[[str, Any], None]


def is_number(v) -> bool:
  """A finite int or float (not a bool): NaN and Inf are never valid settings."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
  def check(dotted, value):
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f"config.{dotted}={value!r} must be an integer")
    if minimum is not None and value < minimum:
      raise ConfigError(f"config.{dotted}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
      raise ConfigError(f"config.{dotted}={value} must be <= {maximum}")
  check.describe = _bounds("integer", minimum, maximum)
  return check


def number(minimum: float | None = None, maximum: float | None = None, exclusive_minimum: bool = False) -> Check:
  def check(dotted, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"config.{dotted}={value!r} must be a number")
    if not math.isfinite(value):
      raise ConfigError(f"config.{dotted}={value} must be a finite number")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
      raise ConfigError(f"config.{dotted}={value} must be {'>' if exclusive_minimum else '>='} {minimum}")
    if maximum is not None and value > maximum:
      raise ConfigError(f"config.{dotted}={value} must be <= {maximum}")
  check.describe = _bounds("number", minimum, maximum, exclusive_minimum)
  return check


def choice(*allowed) -> Check:
  def check(dotted, value):
    if isinstance(value, bool) or value not in allowed:
      raise ConfigError(f"config.{dotted}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")
  check.describe = " | ".join(map(str, allowed))
  return check


def terms(*allowed) -> Check:
  """Names from `allowed` joined by '+', each at most once: 'infonce+video_text'."""
  def check(dotted, value):
    parts = value.split("+") if isinstance(value, str) else []
    bad = [p for p in parts if p not in allowed]
    if not parts or bad or len(set(parts)) != len(parts):
      why = (f"{bad[0]!r} is not a term" if bad else "a term is repeated" if parts else "it must be a string")
      raise ConfigError(f"config.{dotted}={value!r}: {why}; join terms from {', '.join(allowed)} with '+', "
                        "e.g. 'infonce+video_text'")
  check.describe = "terms joined by '+'"
  return check


def boolean() -> Check:
  def check(dotted, value):
    if not isinstance(value, bool):
      raise ConfigError(f"config.{dotted}={value!r} must be one of True, False")
  check.describe = "bool"
  return check


def name(example: str) -> Check:
  """A non-empty string (a split name, a path)."""
  def check(dotted, value):
    if not isinstance(value, str) or not value:
      raise ConfigError(f"config.{dotted}={value!r} must name a split, e.g. {example!r}")
  check.describe = "str"
  return check


def string() -> Check:
  def check(dotted, value):
    if not isinstance(value, str):
      raise ConfigError(f"config.{dotted}={value!r} must be a string")
  check.describe = "str"
  return check


def step_range() -> Check:
  """'' (off) or 'START:STOP', 0 <= START < STOP: steps START..STOP-1 (0-based, as the loop counts)."""
  def check(dotted, value):
    if value == "":
      return
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or int(parts[0]) >= int(parts[1]):
      raise ConfigError(f"config.{dotted}={value!r} must be 'START:STOP' with 0 <= START < STOP (e.g. '10:13'), "
                        "or '' for none")
  check.describe = "'' or START:STOP"
  return check


def pair(lo: float, hi: float) -> Check:
  def check(dotted, value):
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_number, value))
            and lo <= value[0] <= value[1] <= hi):
      raise ConfigError(f"config.{dotted}={value!r} must be a pair (low, high) with {lo} <= low <= high <= {hi}")
  check.describe = f"(low, high) in [{lo}, {hi}]"
  return check


def rgb(positive: bool) -> Check:
  def check(dotted, value):
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(map(is_number, value))
    if not ok or (positive and min(value) <= 0):
      what = "positive numbers" if positive else "numbers"
      raise ConfigError(f"config.{dotted}={value!r} must be 3 {what}, one per RGB channel, e.g. (0.5, 0.5, 0.5)")
  check.describe = "3 numbers (R, G, B)"
  return check


def numbers(minimum: float = 0.0, integers: bool = False, example: str = "(0.01, 0.1)") -> Check:
  """A non-empty list of numbers >= minimum (positive integers with integers=True)."""
  def check(dotted, value):
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        (isinstance(v, int) and not isinstance(v, bool)) if integers else is_number(v) for v in value)
    if not ok or any(v < minimum for v in value):
      what = "positive integers" if integers else f"numbers >= {minimum}"
      raise ConfigError(f"config.{dotted}={value!r} must be a non-empty list of {what}, e.g. {example}")
  check.describe = "list of " + ("int" if integers else "number")
  return check


def subset(*allowed) -> Check:
  """A tuple of names (or a comma-separated string) drawn from `allowed`."""
  def check(dotted, value):
    for item in as_names(value):
      if item not in allowed:
        raise ConfigError(f"config.{dotted} contains {item!r}; choose among {', '.join(map(repr, allowed))}")
  check.describe = "subset of " + ", ".join(allowed)
  return check


SOLVERS = ("euler", "heun")  # objectives/generate.py's SOLVERS


def parse_samplers(value) -> list[tuple[str, float, int | None]]:
  """'heun:2,euler:3:64' (or a tuple of such items) -> [(solver, guidance, steps or None)];
  ValueError saying which item is malformed."""
  out = []
  for item in as_names(value):
    parts = item.split(":")
    try:
      if len(parts) not in (2, 3) or parts[0] not in SOLVERS:
        raise ValueError
      guidance, steps = float(parts[1]), int(parts[2]) if len(parts) == 3 else None
      if not (math.isfinite(guidance) and guidance >= 0) or (steps is not None and steps < 1):
        raise ValueError
    except ValueError:
      raise ValueError(f"{item!r} is not SOLVER:GUIDANCE[:STEPS] (solver {' | '.join(SOLVERS)}, guidance >= 0, "
                       "steps >= 1)") from None
    out.append((parts[0], guidance, steps))
  return out


def samplers() -> Check:
  """Sampler variants 'SOLVER:GUIDANCE[:STEPS]', comma-separated or a tuple ('' = none)."""
  def check(dotted, value):
    if not isinstance(value, (str, tuple, list)):
      raise ConfigError(f"config.{dotted}={value!r} must be a string like 'heun:2,euler:3:64'")
    try:
      parse_samplers(value)
    except ValueError as e:
      raise ConfigError(f"config.{dotted}: {e}, e.g. 'heun:2,euler:3:64'") from None
  check.describe = "SOLVER:GUIDANCE[:STEPS], ..."
  return check


def as_names(value) -> tuple[str, ...]:
  """('a', 'b') or 'a,b' -> ('a', 'b')."""
  if isinstance(value, str):
    return tuple(v for v in value.split(",") if v)
  return tuple(value)


def _bounds(kind: str, lo, hi, exclusive: bool = False) -> str:
  parts = [kind]
  if lo is not None:
    parts.append(f"{'>' if exclusive else '>='} {lo}")
  if hi is not None:
    parts.append(f"<= {hi}")
  return " ".join(parts)
