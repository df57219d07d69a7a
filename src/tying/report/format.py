"""How numbers look in the terminal and on the page: one formatter for both."""

from __future__ import annotations

import decimal
import fractions
import math
from typing import Any

__all__ = ["format_number", "format_runtime", "format_value"]

#: A float's shortest decimal (17 digits, exponents to +-324) times 100, exactly: a
#: context of its own, not the caller's ``decimal.getcontext()``.
_EXACT = decimal.Context(prec=40, Emax=999, Emin=-999)


def format_value(value: Any) -> str:
    """A short human form of a measured value.

    Ints get thousands separators, floats four significant digits (at least the
    units from 1,000 on; scientific when very small or large), booleans yes/no,
    lists and dicts their items; NumPy and torch scalars as the Python number they hold.

    Example:
        >>> format_value(9437184), format_value(0.000012345), format_value(3.14159)
        ('9,437,184', '1.23e-05', '3.142')
        >>> format_value(7486.7), format_value(12345678.9)
        ('7,487', '1.23e+07')
        >>> format_value(True), format_value([1, 2.5]), format_value(None)
        ('yes', '[1, 2.5]', '')
        >>> import numpy as np
        >>> format_value(np.int64(1234567)), format_value(np.True_)
        ('1,234,567', 'yes')
        >>> format_value({"tied": 0.1 + 0.2, "params": 1234567})
        '{tied: 0.3, params: 1,234,567}'
    """
    if value is None:
        return ""
    # a NumPy or torch scalar reads as the Python number it holds: np.int64(1234567)
    # printed "1234567" beside "1,234,567", np.True_ "True", a tensor "tensor(3)"
    value = _as_python_number(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, int | float):
        return format_number(value, 4)
    if isinstance(value, complex):  # its repr printed every binary digit (stop 62)
        imag = format_number(abs(value.imag), 4)  # inf and nan spelt out too
        sign = "-" if math.copysign(1.0, value.imag) < 0 else "+"
        return f"({format_number(value.real, 4)}{sign}{imag}j)"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):  # its repr printed 0.30000000000000004 (stop 58)
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def format_number(value: Any, digits: int = 3, *, sign: bool = False, percent: bool = False) -> str:
    """A measured number as text that never reads as zero or with meaningless digits.

    The one formatter for every number an experiment writes into its key figure,
    a table cell or a figure title. A fixed-decimal format (``{x:.4f}``) printed a
    1e-7 error as ``0.0000`` -- evidence that read as exactly zero -- and a huge
    value with digits that mean nothing. Here: ``digits`` significant digits (at
    least the units from 1,000 on, with thousands separators), scientific with three
    significant digits below 1e-3 and from 1e6 on, integers as integers, and ``nan``,
    ``inf``, ``-inf`` spelt out. Only an exact zero reads ``0``, and below 1,000 only
    a whole number reads as one, and elsewhere only a power of ten reads as one: more
    digits are shown where rounding would make one (``0.99996``, not ``1``;
    ``0.099996``, not ``0.1``, the tolerance a check compares it with; ``9,999.96``, not
    ``10,000``; ``9.99996e+06``, not ``1e+07``). A float's digits past the 15th are
    its binary rounding, not a measurement, and are not shown (``178.00000000000003``
    is ``178``), except where they are all that keeps it from a power of ten, the
    tolerance or bound a check compares it with (``0.9999999999999999`` is not ``1``);
    a float32, float16 or bfloat16 scalar shows the digits of its own precision
    (``np.float32(0.1)`` is ``0.1``, not ``0.100000001``), and a whole one the whole
    number it holds (bfloat16 1032 is ``1,032``, as torch prints it, not ``1,030``).

    Args:
        value: an int or float (a NumPy or torch scalar of any width, a ``Decimal`` or a
            ``Fraction`` is taken as the Python number it holds).
        digits: significant digits in the ordinary range (>= 1).
        sign: write ``+`` before a positive number (a difference, a gain).
        percent: show ``value`` (a fraction) as a percentage: ``0.25`` -> ``25%``.

    Returns:
        The text.

    Raises:
        TypeError: ``value`` is not a number (a bool, a string, an array).
        ValueError: ``digits`` < 1.

    Example:
        >>> format_number(1.234e-7), format_number(0.87345), format_number(12345.6)
        ('1.23e-07', '0.873', '12,346')
        >>> format_number(0.25, percent=True), format_number(0.004, percent=True)
        ('25%', '0.4%')
        >>> format_number(0.0123, sign=True), format_number(3), format_number(float("nan"))
        ('+0.0123', '3', 'nan')
        >>> format_number(0.99996), format_number(0.99996, percent=True), format_number(12.96)
        ('0.99996', '99.996%', '12.96')
        >>> format_number(0.58, 2, percent=True), format_number(0.1 + 0.2)
        ('58%', '0.3')
        >>> format_number(5000.5, 5), format_number(-1234.5, 6)
        ('5,000.5', '-1,234.5')
        >>> import numpy as np
        >>> format_number(sum([17.8] * 10)), format_number(np.float32(0.1))
        ('178', '0.1')
    """
    value = _as_python_number(value)  # a NumPy or torch scalar: the number it holds
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"format_number() takes an int or float, got {value!r} ({type(value).__name__}); "
            "pass the number (format words and lists yourself)"
        )
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"format_number(): digits must be an int >= 1, got {digits!r}")
    if isinstance(value, float) and math.isfinite(value):
        # a float's 16th and 17th digits are its binary rounding, not a measurement:
        # 178.00000000000003 (a sum of 0.1s) printed all of them where 1178.0000000000002
        # printed "1,178" (stop 61); 15 significant digits keep every digit a decimal
        # number typed or computed can mean; the largest floats round up to inf there
        shown = float(f"{value:.15g}")
        # ... but not to a power of ten it is not: 9.999999999999997e-07 read "1e-06"
        # and sum([0.1] * 10) "1", the tolerance or bound a check compared it with, the
        # 1-ulp gap that decided the check (stop 58's rule; stop 61 review)
        to_power = shown != value and shown != 0 and _power_of_ten(abs(shown))
        value = shown if math.isfinite(shown) and not to_power else value
    suffix = ""
    plus = "+" if sign and value > 0 else ""
    if percent:
        suffix = "%"
        if isinstance(value, float) and math.isfinite(value):
            # scaled as the decimal it reads as, so the product's binary rounding is no
            # digit (0.58 * 100 is 57.99999999999999, which read "57.99999999999999%",
            # stop 56) and rounding it to 15 digits makes no power of ten (sum([0.1] * 10)
            # read "100%" beside its own "0.9999999999999999"; stop 62)
            # in a context of its own: the caller's (decimal.getcontext().prec = 3) rounded
            # 0.12345678 to "12.3%" beside its own "0.123457"
            scaled = float(_EXACT.multiply(decimal.Decimal(repr(value)), 100))
            if math.isinf(scaled):  # 1e308 read "inf%" (stop 62): the exponent, plus two
                mantissa, exponent = _not_a_power_of_ten(value).split("e")
                return f"{plus}{mantissa}e{int(exponent) + 2:+03d}{suffix}"
            value = scaled
        else:
            value = value * 100
    if isinstance(value, int):
        return f"{plus}{value:,}{suffix}"
    if math.isnan(value) or math.isinf(value):
        return f"{plus}{value}{suffix}"
    if value == 0:
        return f"0{suffix}"
    if value.is_integer() and abs(value) < 1e15:
        return f"{plus}{int(value):,}{suffix}"
    mag = abs(value)
    if mag < 1e-3:
        text = _not_a_whole_number(value, 3)  # 0.000999996 is not "0.001"
    elif mag >= 1e6:
        text = _not_a_power_of_ten(value)  # 9.99996e6 is not "1e+07"
    elif mag >= 10 ** (digits - 1) and mag >= 1e3:
        text = _units(value)
    else:
        text = _not_a_whole_number(value, digits)
        if "e" in text:  # .Ng of 123.4 with N=2 is 1.2e+02: the units instead
            text = _units(value)
        elif mag >= 1e3:  # 5000.5 at 5 digits read "5000.5" beside "5,001" (stop 60)
            text = _grouped(text)
    return f"{plus}{text}{suffix}"


def _as_python_number(value: Any) -> Any:
    """A NumPy or torch scalar as the Python number it holds, anything else as it is.

    A float of fewer bits (float32, float16, bfloat16) becomes the shortest decimal that
    is that float again: ``np.float32(0.1)`` holds 0.100000001490116..., which printed
    ``0.100000001`` where the measurement was 0.1 in its own precision (stop 61), as
    NumPy and torch print it.
    """
    if isinstance(value, decimal.Decimal | fractions.Fraction):
        from tying.experiments.values import plain  # a Decimal or Fraction: its float (stop 62)

        return plain(value)
    if getattr(value, "ndim", None) != 0 or not hasattr(value, "item"):
        return value
    number = value.item()
    if isinstance(number, bool | int):
        return number
    from tying.experiments.values import plain  # the one shortest-decimal reading (stop 61)

    # a float or complex of any width as plain data reads it: np.longdouble's .item() is
    # itself, which format_number refused as no number, and a complex64 printed its
    # float32 parts' binary noise (0.10000000149011612; stop 62)
    return plain(value)


def _units(value: float) -> str:
    """``value`` (not a whole number, under a million) to its units, with separators, or
    with decimals where the units would read as a power of ten: 9,999.96 is ``9,999.96``,
    not ``10,000`` (stop 59: as a million and more and below 1 already were)."""
    for n in range(0, 18):
        text = f"{value:,.{n}f}"
        back = abs(float(text.replace(",", "")))
        if back == abs(value) or not _power_of_ten(back):
            return text
    return repr(value)


def _grouped(text: str) -> str:
    """Fixed-point ``text`` from 1,000 on with thousands separators: ``5000.5`` ->
    ``5,000.5``, as every other number from 1,000 on is written."""
    units, dot, decimals = text.partition(".")
    return f"{int(units):,}{dot}{decimals}"


def _not_a_whole_number(value: float, digits: int) -> str:
    """``value`` (not a whole number) to ``digits`` significant digits, or more where
    fewer would read as a whole number or a power of ten: 0.99996 is ``0.99996``, not
    ``1`` (a correlation or a fraction that read as exactly 1), 99.996% not ``100%``,
    and 0.099996 not ``0.1``, 9.99996e-07 not ``1e-06`` (stop 58: a gap of 0.099996
    read as the 0.1 its check asked for, beside FAIL; tolerances are powers of ten)."""
    for n in range(digits, 18):
        text = f"{value:.{n}g}"
        back = abs(float(text))
        if back == abs(value) or not (back.is_integer() or _power_of_ten(back)):
            return text
    return repr(value)


def _not_a_power_of_ten(value: float) -> str:
    """``value`` (from a million on) to three significant digits in scientific form, or
    more where three would read as a power of ten: 9.99996e6 is ``9.99996e+06``, not
    ``1e+07`` (a bound of 1e7 read as met by a value just under it)."""
    for n in range(3, 18):
        mantissa, exponent = f"{value:.{n - 1}e}".split("e")  # .Ng is no longer scientific
        text = f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"  # past N digits: as .3g
        back = abs(float(text))
        if back == abs(value) or not _power_of_ten(back):
            return text
    return repr(value)


def _power_of_ten(x: float) -> bool:
    """Whether ``x`` (> 0) is exactly the float of ``1e<k>`` for some whole ``k``."""
    shown = f"{x:.0e}"  # "1e-01"
    return shown.startswith("1e") and float(shown) == x


def format_runtime(seconds: float) -> str:
    """Seconds as ``0.42 s``, ``12.3 s`` or ``2 min 05 s``.

    Example:
        >>> format_runtime(0.4213), format_runtime(12.34), format_runtime(125)
        ('0.42 s', '12.3 s', '2 min 05 s')
        >>> format_runtime(9.996), format_runtime(59.96), format_runtime(float("nan"))
        ('10.0 s', '1 min 00 s', 'nan s')
    """
    if not math.isfinite(seconds):  # inf raised OverflowError, nan ValueError (stop 60)
        return f"{seconds} s"
    # compared as shown: 9.996 read "10.00 s" and 59.96 "60.0 s" (stop 60)
    if round(seconds, 2) < 10:
        return f"{seconds:.2f} s"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"
