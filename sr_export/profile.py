"""TensorRT optimization profiles: moved to :mod:`sr_runtime.export.profile` (the runtime's automatic
fast path builds engines too, and ``sr_runtime`` never imports ``sr_export``); re-exported here so
``sr-export`` and code importing ``sr_export.profile`` keep working."""

from sr_runtime.export.profile import *  # noqa: F401,F403
from sr_runtime.export.profile import __all__  # noqa: F401
