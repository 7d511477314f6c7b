"""ONNX writing and the parity gate, below both users: ``sr_export`` (the explicit export command)
and the runtime's automatic acceleration (:mod:`sr_runtime.accel`), which builds the fast form of a
model itself. They live here so that ``sr_runtime`` never imports ``sr_export`` (the arrows point
``benchmarks -> sr_export -> sr_runtime <- sr_train``). Importing this package needs ``onnx`` and
``onnxruntime`` only when its functions run."""
