"""UDC hardware-in-the-loop harness: candidate -> int8 TFLite -> Vela -> target -> store -> report."""

__version__ = "0.1.0"
