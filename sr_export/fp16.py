"""FP16 ONNX conversion: moved to :mod:`sr_runtime.export.fp16` (the runtime's automatic fast path
converts to FP16 too, and ``sr_runtime`` never imports ``sr_export``); re-exported here so
``sr-export`` and code importing ``sr_export.fp16`` keep working."""

from sr_runtime.export.fp16 import *  # noqa: F401,F403
from sr_runtime.export.fp16 import __all__  # noqa: F401
