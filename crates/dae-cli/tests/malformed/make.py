"""Writes the malformed files of this folder (run: python3 make.py). Each is named in
cases.txt with the command that reads it and the text its error must contain."""
import gzip, json, struct
import numpy as np


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def npy(descr, shape, body, fortran=False, extra=""):
    dims = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': %s, %s}" % (descr, fortran, extra or "'shape': %s, " % dims)
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + body


def safetensors(tensors, meta):
    header, body = {}, b""
    for name, arr in tensors.items():
        b = arr.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [len(body), len(body) + len(b)]}
        body += b
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + body


write("idx_bad_magic.idx", b"\x00\x00\x07\x03" + struct.pack(">III", 2, 2, 2) + bytes(8))
write("idx_no_dimensions.idx", b"\x00\x00\x08\x00")
write("truncated-idx3-ubyte", b"\x00\x00\x08\x03" + struct.pack(">III", 10, 28, 28) + bytes(100))
write("huge-idx3-ubyte", b"\x00\x00\x08\x03" + struct.pack(">III", 1000000000, 1000, 1000))
write("corrupt-idx3-ubyte.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"this is not deflate data" * 4)
write("npy_bad_magic.npy", b"NUMPY\x01\x00" + bytes(60))
write("npy_complex.npy", npy("<c8", (2, 2), bytes(32)))
write("npy_fortran.npy", npy("<f4", (2, 2), bytes(16), fortran=True))
write("npy_no_shape.npy", npy("<f4", (2, 2), bytes(16), extra="'shap': (2, 2), "))
write("npy_truncated.npy", npy("<f4", (100, 10), bytes(400)))
write("npy_nan.npy", npy("<f4", (2, 2), np.array([0.1, 0.2, np.nan, 0.4], "<f4").tobytes()))
write("npy_integers.npy", npy("<i8", (2, 2), bytes(32)))
write("npy_version9.npy", b"\x93NUMPY\x09\x00" + bytes(60))
write("csv_ragged.csv", b"0.1,0.2,0.3\n0.4,0.5\n")
write("csv_text.csv", b"a,b\n0.1,0.2\n0.3,high\n")
write("csv_empty_field.csv", b"0.1,0.2\n0.3,\n")
write("csv_inf.csv", b"0.1,0.2\ninf,0.4\n")
write("csv_empty.csv", b"")
write("csv_header_only.csv", b"x,y,z\n")
write("csv_binary.csv", b"0.1,0.2\n\xff\xfe\x00\x01\n")
model = safetensors({"W": np.zeros((4, 2)), "b": np.zeros(2), "c": np.zeros(4)},
                    {"format": "dae", "format_version": "1", "kind": "autoencoder",
                     "config": json.dumps({"inputs": 4, "hidden": 2, "encoder": "sigmoid", "decoder": "sigmoid", "tied": True,
                                           "loss": "cross-entropy", "noise": "masking:0.3", "emphasis": None}),
                     "train": "{}", "scaling": json.dumps({"kind": "none", "offset": [], "factor": []}),
                     "history": "[]", "best_epoch": "null", "data": "{}"})
write("model_truncated.safetensors", model[: len(model) // 2])
write("model_foreign.safetensors", safetensors({"weight": np.zeros((3, 3))}, {"framework": "someone else's"}))
write("model_future.safetensors", safetensors({"W": np.zeros((4, 2))}, {"format": "dae", "format_version": "99", "kind": "autoencoder"}))
write("model_bad_shape.safetensors", model.replace(b'"shape": [4, 2]', b'"shape": [2, 4]'))
write("model_not_safetensors.safetensors", b"I am a text file, not a model.\n")
