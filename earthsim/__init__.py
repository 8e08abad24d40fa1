"""earthsim: learning emulators of spatiotemporal physics and weather."""

__version__ = "0.1.0"
