"""hwnas: hardware-aware neural architecture search for mobile and edge networks."""

__version__ = "0.1.0"
