"""TensorRT engines with their sidecars: moved to :mod:`sr_runtime.export.tensorrt_build` (the
runtime's automatic fast path builds engines too, and ``sr_runtime`` never imports ``sr_export``);
re-exported here so ``sr-export`` and code importing ``sr_export.tensorrt`` keep working."""

from sr_runtime.export.tensorrt_build import *  # noqa: F401,F403
from sr_runtime.export.tensorrt_build import __all__  # noqa: F401
