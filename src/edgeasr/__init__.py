"""edgeasr: on-device speech recognition (train → compress → deploy → update)."""

__version__ = "0.1.0"
