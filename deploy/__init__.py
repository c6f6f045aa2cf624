"""Deployment: ONNX export of the task models, checked against PyTorch with onnxruntime."""
