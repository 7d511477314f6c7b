"""The export library: ONNX writing, FP16 conversion, TensorRT and OpenVINO IR building, and the one
parity gate (:mod:`.verify`), below both users: ``sr_export`` (the explicit export command) and the
runtime's fast path (:mod:`sr_runtime.fastpath`), which builds the fast form of a model itself.
They live here so that ``sr_runtime`` never imports ``sr_export`` (the arrows point
``benchmarks -> sr_export -> sr_runtime <- sr_train``), and the backends never import this package.
Importing it needs ``onnx``, ``onnxruntime``, ``tensorrt`` or ``openvino`` only when its functions run."""
