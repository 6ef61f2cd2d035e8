"""Safetensors files with torch alone (no numpy, no safetensors package): what the GPU check and
the reference's step timer need on a machine that has only python3 and torch.

Format: an 8-byte little-endian header length, a JSON header mapping each name to its dtype,
shape and byte range (plus an optional `__metadata__`), then the raw little-endian data."""

import json
import os
import struct

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


def save(tensors, path):
    """Writes `{name: tensor}` to `path` atomically (a temporary file, then a rename)."""
    header, chunks, offset = {}, [], 0
    for name, tensor in sorted(tensors.items()):
        data = raw_bytes(tensor)
        header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)
    os.replace(tmp, path)


def raw_bytes(tensor):
    """A tensor's data as bytes, copied through a writable buffer (no numpy)."""
    flat = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)
    buffer = bytearray(flat.numel())
    if buffer:
        torch.frombuffer(buffer, dtype=torch.uint8).copy_(flat)
    return bytes(buffer)


def load(path):
    """Reads every tensor of a safetensors file, as `{name: tensor}` on the CPU."""
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    body = blob[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        raw = bytearray(body[start:end])
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(DTYPES[entry["dtype"]]).reshape(entry["shape"]).clone()
    return tensors
