"""PyTorch backend: a :class:`~sr_runtime.deploy.DeployModel` in eager mode or compiled, CPU or CUDA,
FP32 or FP16, optionally channels-last and replayed from CUDA graphs."""

from __future__ import annotations

import logging

import torch
from torch import nn

from sr_runtime.backends.base import Backend, parse_device
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import BackendUnavailableError
from sr_runtime.spec import IOSpec

__all__ = ["TorchBackend"]

log = logging.getLogger(__name__)

_MAX_GRAPHS = 4


class _CUDAGraphRunner:
    """Capture ``model`` once per input shape and replay it; returns a copy of the static output."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, x: torch.Tensor):
        static_in = torch.empty_like(x)  # keeps x's memory format (channels-last)
        static_in.copy_(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up cuDNN autotuning and the allocator outside the capture
                self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Capture on the side stream that warmed up (same allocator pool), not on a fresh one.
        with torch.cuda.graph(graph, stream=side):
            static_out = self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return graph, static_in, static_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), tuple(x.stride()), x.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= _MAX_GRAPHS:
                self.graphs.pop(next(iter(self.graphs)))
            log.info("capturing a CUDA graph for input %s", tuple(x.shape))
            with torch.cuda.device(self.device):  # cuda:1 captures on cuda:1, whatever the current device
                entry = self.graphs[key] = self._capture(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        with torch.cuda.device(self.device):
            graph.replay()
        return static_out.clone()


class TorchBackend(Backend):
    """Run a network (wrapped in DeployModel) with PyTorch.

    ``model``: a DeployModel, or a network with ``io_spec`` (wrapped here). ``device``: ``cpu`` or
    ``cuda[:N]``. ``precision``: ``fp32``, or ``fp16`` (CUDA only). ``channels_last``: NHWC memory
    format (default: on CUDA). ``compile``: ``torch.compile`` the model (one graph per input shape).
    ``cuda_graphs``: capture and replay CUDA graphs per input shape (CUDA only); both make
    ``fixed_shape`` (and ``fixed_batch``) true, so the Upscaler feeds one padded tile shape and
    nothing recompiles or recaptures per image size. Raises BackendUnavailableError for a device
    or precision that is not available.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: IOSpec | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        channels_last: bool | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
        source: str = "",
    ) -> None:
        dev = parse_device(device)
        if precision not in ("fp32", "fp16"):
            raise BackendUnavailableError(
                f"the torch backend runs fp32 or fp16 (CUDA), not {precision!r}; bf16 runs on --backend openvino"
            )
        if precision == "fp16" and dev.type != "cuda":
            raise BackendUnavailableError(
                f"fp16 is supported on CUDA devices only, {dev} was asked for; use --fp32 on CPU or --device cuda"
            )
        if cuda_graphs and dev.type != "cuda":
            raise BackendUnavailableError(f"CUDA graphs need a CUDA device, {dev} was asked for")
        deploy = model if isinstance(model, DeployModel) else DeployModel(model, spec)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        super().__init__(
            spec=deploy.spec,
            device=dev,
            precision=precision,
            input_dtype=dtype,
            fixed_batch=compile or cuda_graphs,
            fixed_shape=compile or cuda_graphs,
            source=source,
        )
        self.channels_last = dev.type == "cuda" if channels_last is None else channels_last
        deploy = deploy.eval().to(device=dev, dtype=dtype)
        for p in deploy.parameters():
            p.requires_grad_(False)
        if self.channels_last:
            deploy = deploy.to(memory_format=torch.channels_last)
        self.model = deploy
        self.compiled = compile
        self.cuda_graphs = cuda_graphs
        self._forward = torch.compile(deploy, dynamic=False) if compile else deploy
        self._graphs = _CUDAGraphRunner(self._forward, dev) if cuda_graphs else None
        self._first_call = True

    def describe(self) -> str:
        extras = [x for x, on in (("channels-last", self.channels_last), ("compiled", self.compiled),
                                  ("CUDA graphs", self.cuda_graphs)) if on]
        return super().describe() + (f" [{', '.join(extras)}]" if extras else "")

    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr.contiguous(memory_format=torch.channels_last) if self.channels_last else lr
        with torch.inference_mode():
            if not self._first_call or not (self.compiled or self.cuda_graphs):
                return self._call(x)
            try:
                out = self._call(x)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # compile and capture failures surface on the first call
                what = "torch.compile" if self.compiled else "CUDA graph capture"
                raise BackendUnavailableError(f"{what} failed ({type(e).__name__}: {e}); run without it") from e
            self._first_call = False
            return out

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self._graphs(x) if self._graphs is not None else self._forward(x)

    def _release(self) -> None:
        self._graphs = None
        self._forward = None
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
