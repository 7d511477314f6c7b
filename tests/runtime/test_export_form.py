"""The graph the exporter traces (DeployModel.export_form) computes the reference function, with the
Y networks' colour work at the low resolution and one depth-to-space at the high one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sr_runtime.archs import build
from sr_runtime.archs.blocks import sub_pixel_conv
from sr_runtime.deploy import DeployModel, SubPixelYDeploy
from tests.conftest import signal_net


@pytest.mark.parametrize(("scale", "kernel", "c_in", "c_out"), [(2, 9, 5, 1), (3, 9, 4, 2), (4, 9, 3, 1), (3, 5, 2, 1)])
def test_sub_pixel_conv_shuffles_to_the_transposed_convolution(scale, kernel, c_in, c_out):
    deconv = nn.ConvTranspose2d(c_in, c_out, kernel, stride=scale, padding=kernel // 2, output_padding=scale - 1)
    x = torch.randn(2, c_in, 7, 5)
    with torch.no_grad():
        want = deconv(x)
        got = nn.functional.pixel_shuffle(sub_pixel_conv(deconv)(x), scale)
    assert got.shape == want.shape == (2, c_out, 7 * scale, 5 * scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", [dict(kernel_size=4, padding=1, output_padding=1), dict(kernel_size=3, padding=1, output_padding=0)])
def test_sub_pixel_conv_refuses_outputs_that_are_not_stride_times_the_input(layout):
    with pytest.raises(ValueError, match="exactly stride times the input"):
        sub_pixel_conv(nn.ConvTranspose2d(2, 1, stride=2, **layout))


@pytest.mark.parametrize("name", ["fsrcnn", "espcn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_export_form_of_a_y_network_equals_the_reference(name, scale):
    deploy = DeployModel(signal_net(name, scale)).eval()
    form = deploy.export_form()
    assert isinstance(form, SubPixelYDeploy)
    for h, w in [(1, 1), (1, 6), (5, 1), (13, 29)]:  # one-pixel sides exercise MATLAB's mirrored border
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            want, got = deploy(x), form(x)
        assert got.shape == want.shape == (2, 3, h * scale, w * scale)
        assert (got - want).abs().max().item() < 1e-5, (h, w)


@pytest.mark.parametrize("name", ["edsr", "srcnn"])
def test_export_form_of_other_networks_is_the_deploy_model_itself(name):
    deploy = DeployModel(build(name, scale=2)).eval()  # RGB network; pre-upsampling Y network
    assert deploy.export_form() is deploy


def test_exported_fsrcnn_graph_has_one_high_resolution_operation(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from sr_runtime.export.onnx import export_onnx

    scale, (h, w) = 4, (16, 24)
    deploy = DeployModel(signal_net("fsrcnn", scale)).eval()
    path = export_onnx(deploy, tmp_path / "fsrcnn.onnx")
    proto = onnx.load(str(path))
    ops = [node.op_type for node in proto.graph.node]
    assert "ConvTranspose" not in ops and "Resize" not in ops
    assert proto.graph.node[-1].op_type == "DepthToSpace"

    # Every tensor but the graph's output stays at the LR size once the input's size is known.
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, h, w)):
        d.ClearField("dim_param")
        d.dim_value = v
    inferred = onnx.shape_inference.infer_shapes(proto)
    output = proto.graph.output[0].name
    sizes = {}
    for info in inferred.graph.value_info:
        shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if len(shape) == 4:
            sizes[info.name] = shape
    assert sizes, "shape inference found no 4-D intermediate tensors"
    big = {name: s for name, s in sizes.items() if name != output and (s[2] > h + 4 or s[3] > w + 4)}
    assert not big, f"intermediate tensors above the LR size: {big}"

    x = np.random.default_rng(0).random((2, 3, 21, 19), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = deploy(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-5
