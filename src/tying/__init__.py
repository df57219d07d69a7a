"""tying: parameter tying / weight sharing as a declared, checked, first-class thing."""

__version__ = "0.1.0"
