"""unlearnable: make image datasets unlearnable and test whether they stay that way."""

__version__ = "0.1.0"
