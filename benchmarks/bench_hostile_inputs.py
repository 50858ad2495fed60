"""Hostile-input sweep of the ``any2reg`` CLI (issue 24, "Done when"): run on demand, not a test.

Builds a few hundred bad inputs under a temporary folder (bad numeric options for every numeric
flag of every command, missing / empty / truncated / corrupted / wrong-format / special files, wrong
shapes, NaN/Inf and constant pixels, mismatched sidecars, masks and labels of the wrong shape or
dtype, NaN/huge displacement fields, corrupted or NaN weights files (copies under the temporary
folder only), existing outputs, two batch runs on one folder...), runs each one as
``python -m napari_any2reg.cli ...`` in its own process (sequentially, OMP_NUM_THREADS=1, a timeout
and a 6 GiB address-space limit per case) and classifies the outcome:

* ``clean error``: non-zero exit, no traceback, at most ``MAX_ERROR_LINES`` lines on stderr;
* ``noisy error``: non-zero exit without a traceback but an empty or long message;
* ``traceback``: 'Traceback' in stdout or stderr;
* ``crash``: killed by a signal (rc < 0, or 134/137/139 from a shell);
* ``hang``: still running at the timeout (the process group is killed);
* ``exit 0 garbage``: exit 0 but the outputs are missing or not finite / out of range;
* ``exit 0``: a hostile case that was accepted and wrote sane outputs (listed for review);
* ``ok``: a valid control case that succeeded with sane outputs;
* ``valid failed``: a valid control case that did not succeed;
* ``skipped``: not applicable here (e.g. permission cases when running as root).

Writes ``benchmarks/results/hostile_inputs.md`` and ``.json``. About 10-15 minutes on 2 cores::

    OMP_NUM_THREADS=1 python benchmarks/bench_hostile_inputs.py [--only SUBSTRING] [--timeout 60]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = ROOT / "weights" / "any2reg-v13.pt"
CLI = [sys.executable, "-m", "napari_any2reg.cli"]
MAX_ERROR_LINES = 4
TIMEOUT = 60.0
MEMORY_LIMIT = 6 << 30
WORKDIR = Path("/tmp")  # the cases' working folder: set to a folder of the temporary tree in main()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

FAST = ["--engine", "any2reg"]
GW = ["--engine", "groupwise", "--iterations-scale", "0.1"]
XC = ["--engine", "xcoreg", "--iterations-scale", "0.1"]
IO = ["--engine", "any2reg-io", "--io-steps", "2"]

#: the hostile values of a numeric flag, by the flag's type
INT_VALUES = ["-1", "0", "1.5", "1000000000", "nan", "text"]
FLOAT_VALUES = ["nan", "inf", "-1", "0", "1e30", "text"]
#: per-flag subsets that keep the sweep near 15 minutes: argparse refuses 'text' / '1.5' / 'nan' for an
#: int flag the same way for every flag, so those run on the first flag of a command only
INT_EVERY_FLAG = ["-1", "0", "1000000000"]
FLOAT_EVERY_FLAG = ["nan", "inf", "-1", "1e30"]


@dataclass
class Case:
    name: str
    group: str
    args: list[str]
    expect: str = "error"  # "error": hostile; "ok": a valid control
    out: str | None = None  # what an exit 0 should have written (file or folder)
    pre: Callable[[], object] | None = None
    post: Callable[[object], None] | None = None
    skip: str | None = None
    timeout: float | None = None
    result: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- building the inputs


def _run_quiet(args: list[str], cwd: Path) -> None:
    subprocess.run(CLI + args, cwd=cwd, check=True, capture_output=True, env=_env())


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONFAULTHANDLER"] = "0"
    return env


def _tif(path: Path, data: np.ndarray, timings=None, kind="molli", spacing=(1.5, 1.5)) -> Path:
    import tifffile

    if timings is None:
        tifffile.imwrite(path, data)
    else:
        meta = {"any2reg": 1, "kind": kind, "name": path.stem, "timings_ms": [float(t) for t in timings],
                "timing_name": "inversion_times_ms", "spacing_mm": list(spacing)}
        tifffile.imwrite(path, data, imagej=data.ndim <= 3 and data.dtype != np.float64,
                         metadata={"axes": "TYX", "any2reg": json.dumps(meta)} if data.ndim == 3 else None)
    return path


def _nii(path: Path, data: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _dicom(path: Path, pixels: np.ndarray, instance: int = 1, ti: float = 100.0) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = "1.2.3.4.5.6.7.8.9"
    ds.StudyInstanceUID = "1.2.3.4.5.6.7.8"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.InversionTime = ti
    ds.SeriesDescription = "MOLLI hostile"
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _weights_variant(path: Path, how: str) -> Path:
    import torch

    ckpt = torch.load(WEIGHTS, map_location="cpu", weights_only=False)

    def mutate(state):
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point():
                state[key] = value.clone().fill_(float("nan")) if how == "nan" else value.clone().fill_(1e30)

    if how in ("nan", "huge"):
        mutate(ckpt["model_state"])
    elif how == "nan_one":
        first = next(k for k, v in ckpt["model_state"].items() if torch.is_tensor(v) and v.is_floating_point())
        ckpt["model_state"][first] = ckpt["model_state"][first].clone().fill_(float("nan"))
    elif how == "no_keys":
        ckpt = {"format": "any2reg-weights"}
    elif how == "wrong_shapes":
        ckpt["model_state"] = {k: (v[..., :1] if torch.is_tensor(v) and v.ndim else v)
                               for k, v in ckpt["model_state"].items()}
    elif how == "list":
        ckpt = [1, 2, 3]
    torch.save(ckpt, path)
    return path


def build_inputs(tmp: Path) -> dict[str, Path]:
    import tifffile

    p: dict[str, Path] = {}
    _run_quiet(["sample", "molli", "-o", str(tmp / "molli.tif"), "--size", "32", "--truth"], tmp)
    _run_quiet(["sample", "stone", "-o", str(tmp / "stone.tif"), "--size", "32"], tmp)
    _run_quiet(["sample", "sasha", "-o", str(tmp / "sasha.tif"), "--size", "32"], tmp)
    p["molli"], p["stone"], p["sasha"] = tmp / "molli.tif", tmp / "stone.tif", tmp / "sasha.tif"
    _run_quiet(["register", str(p["molli"]), "-o", str(tmp / "reg"), "--engine", "any2reg"], tmp)
    p["field"] = tmp / "reg" / "displacement.npy"
    stack = tifffile.imread(p["molli"]).astype(np.float32)
    n, h, w = stack.shape
    meta = json.loads(tifffile.TiffFile(p["molli"]).imagej_metadata["any2reg"])
    ti = meta["timings_ms"]
    p["stack_shape"] = Path(f"{n}x{h}x{w}")

    bad = tmp / "bad"
    bad.mkdir()
    # --- files that are not what they claim
    (bad / "empty.tif").write_bytes(b"")
    (bad / "empty.nii.gz").write_bytes(b"")
    (bad / "empty.nii").write_bytes(b"")
    (bad / "empty.npy").write_bytes(b"")
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "text.tif").write_text("this is not a TIFF\n")
    (bad / "text.nii.gz").write_text("not gzip\n")
    (bad / "garbage.nii.gz").write_bytes(gzip.compress(os.urandom(2000)))
    (bad / "random.tif").write_bytes(b"II*\0" + os.urandom(4000))
    (bad / "random.dcm").write_bytes(os.urandom(3000))
    (bad / "text.dcm").write_text("DICM? no.\n")
    (bad / "series.txt").write_text("hello\n")
    (bad / "noext").write_bytes(p["molli"].read_bytes())
    raw = p["molli"].read_bytes()
    (bad / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    (bad / "truncated_header.tif").write_bytes(raw[:200])
    corrupt = bytearray(raw)
    for i in range(8, len(corrupt), 97):
        corrupt[i] = (corrupt[i] * 31 + 7) % 256
    (bad / "corrupted.tif").write_bytes(bytes(corrupt))
    png = bad / "image.tif"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.imsave(bad / "picture.png", stack[0], cmap="gray")
        shutil.copy(bad / "picture.png", png)
    except Exception:  # matplotlib missing: any non-TIFF bytes do
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    # --- DICOM
    d_ok = bad / "dicom_ok"
    d_ok.mkdir()
    for k in range(n):
        _dicom(d_ok / f"f{k:02d}.dcm", np.clip(stack[k], 0, None) * 1000 / max(float(stack.max()), 1e-6),
               instance=k + 1, ti=ti[k])
    good_dcm = (d_ok / "f00.dcm").read_bytes()
    (bad / "truncated.dcm").write_bytes(good_dcm[: len(good_dcm) // 2])
    (bad / "header_only.dcm").write_bytes(good_dcm[:300])
    d_mixed = bad / "dicom_with_truncated"
    shutil.copytree(d_ok, d_mixed)
    (d_mixed / "f03.dcm").write_bytes(good_dcm[:400])
    d_one = bad / "dicom_one_frame"
    d_one.mkdir()
    shutil.copy(d_ok / "f00.dcm", d_one / "f00.dcm")
    d_zero = bad / "dicom_zero_byte_in_folder"
    d_zero.mkdir()
    (d_zero / "a.dcm").write_bytes(b"")
    shutil.copy(d_ok / "f00.dcm", d_zero / "f00.dcm")
    nondcm = bad / "not_dicom_folder"
    nondcm.mkdir()
    for k in range(4):
        (nondcm / f"file{k}.dcm").write_text(f"text {k}\n")
        (nondcm / f"notes{k}.txt").write_text("notes\n")
    (bad / "empty_folder").mkdir()
    (bad / "dir.tif").mkdir()
    (bad / "dir.npy").mkdir()
    os.mkfifo(bad / "fifo.tif")
    os.mkfifo(bad / "fifo.dcm")
    os.mkfifo(bad / "fifo.npy")
    os.mkfifo(bad / "fifo.csv")
    os.mkfifo(bad / "fifo.pt")
    shutil.copy(p["molli"], bad / "unreadable.tif")
    os.chmod(bad / "unreadable.tif", 0)
    # --- shapes
    _tif(bad / "frame2d.tif", stack[0])
    _tif(bad / "one_frame.tif", stack[:1], ti[:1])
    _tif(bad / "two_frames.tif", stack[:2], ti[:2])
    _tif(bad / "tiny_1px.tif", stack[:, :1, :1].copy(), ti)
    _tif(bad / "tiny_3px.tif", stack[:, :3, :3].copy(), ti)
    _tif(bad / "thin_1row.tif", stack[:, :1, :].copy(), ti)
    tifffile.imwrite(bad / "stack4d.tif", np.stack([stack, stack]))
    tifffile.imwrite(bad / "stack5d.tif", np.stack([stack, stack])[None, ..., None].repeat(2, -1))
    tifffile.imwrite(bad / "rgb.tif", np.repeat(stack[..., None], 3, -1).astype(np.uint8))
    tifffile.imwrite(bad / "complex.tif", stack.astype(np.complex64))
    tifffile.imwrite(bad / "bool.tif", stack > stack.mean())
    tifffile.imwrite(bad / "float64.tif", stack.astype(np.float64))
    _nii(bad / "frame2d.nii.gz", stack[0].T.copy())
    _nii(bad / "stack.nii.gz", np.ascontiguousarray(stack.transpose(2, 1, 0)))
    _nii(bad / "nan.nii.gz", np.full((w, h, n), np.nan, np.float32))
    _nii(bad / "six_d.nii.gz", np.zeros((4, 4, 1, 2, 1, 2), np.float32))
    # huge declared dimensions: a valid header claiming 30000 x 30000 x 1 x 1000 voxels, tiny data
    huge = bytearray((bad / "stack.nii.gz").read_bytes())
    hdr = bytearray(gzip.decompress(bytes(huge)))
    import struct

    struct.pack_into("<8h", hdr, 40, 4, 30000, 30000, 1, 1000, 1, 1, 1)
    (bad / "huge_dims.nii.gz").write_bytes(gzip.compress(bytes(hdr)))
    (bad / "huge_dims.nii").write_bytes(bytes(hdr))
    # a TIFF whose IFD claims a huge image (patch ImageWidth / ImageLength of a 2x2 page)
    tifffile.imwrite(bad / "huge_tags.tif", np.zeros((2, 2), np.uint16))
    hb = bytearray((bad / "huge_tags.tif").read_bytes())
    ifd = struct.unpack_from("<I", hb, 4)[0]
    count = struct.unpack_from("<H", hb, ifd)[0]
    for k in range(count):
        off = ifd + 2 + 12 * k
        tag, typ = struct.unpack_from("<HH", hb, off)
        if tag in (256, 257):
            if typ == 3:
                struct.pack_into("<H", hb, off + 8, 65000)
            else:
                struct.pack_into("<I", hb, off + 8, 200000)
    (bad / "huge_tags.tif").write_bytes(bytes(hb))
    # --- pixel values
    v = stack.copy()
    v[2, 10:20, 10:20] = np.nan
    _tif(bad / "nan_patch.tif", v, ti)
    v = stack.copy()
    v[3, 5, 5] = np.inf
    _tif(bad / "inf_pixel.tif", v, ti)
    v = stack.copy()
    v[4] = np.nan
    _tif(bad / "nan_frame.tif", v, ti)
    _tif(bad / "all_nan.tif", np.full_like(stack, np.nan), ti)
    _tif(bad / "all_zero.tif", np.zeros_like(stack), ti)
    _tif(bad / "all_const.tif", np.full_like(stack, 5.0), ti)
    v = stack.copy()
    v[1] = 0
    _tif(bad / "one_const_frame.tif", v, ti)
    _tif(bad / "huge_values.tif", stack * 1e37, ti)
    _tif(bad / "negative.tif", -stack, ti)
    _tif(bad / "int16.tif", (stack * 1000).astype(np.int16), ti)
    # --- timings
    _tif(bad / "ti_nan.tif", stack, [float("nan")] * n)
    _tif(bad / "ti_negative.tif", stack, [-t for t in ti])
    _tif(bad / "ti_short.tif", stack, ti[:3])
    _tif(bad / "ti_dup.tif", stack, [100.0] * n)
    for name, content in {
        "sidecar_short": {"timings_ms": ti[:3]},
        "sidecar_long": {"timings_ms": ti + ti},
        "sidecar_nan": {"timings_ms": [None] * n},
        "sidecar_text": {"timings_ms": "soon"},
        "sidecar_spacing": {"timings_ms": ti, "spacing_mm": [-1, 0]},
        "sidecar_kind": {"timings_ms": ti, "kind": "banana"},
        "sidecar_list": [1, 2, 3],
    }.items():
        tifffile.imwrite(bad / f"{name}.tif", stack)
        (bad / f"{name}.json").write_text(json.dumps(content))
    tifffile.imwrite(bad / "sidecar_broken.tif", stack)
    (bad / "sidecar_broken.json").write_text("{timings_ms: [1, 2")
    # --- masks / labels
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (np.hypot(yy - h / 2, xx - w / 2) < 10).astype(np.uint8)
    np.save(bad / "mask_ok.npy", mask)
    np.save(bad / "mask_small.npy", mask[:16, :16])
    np.save(bad / "mask_3d.npy", np.stack([mask] * 3))
    np.save(bad / "mask_nan.npy", np.where(mask > 0, np.nan, 0.0))
    np.save(bad / "mask_zero.npy", np.zeros_like(mask))
    np.save(bad / "mask_object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(bad / "mask_complex.npy", mask.astype(np.complex64))
    np.save(bad / "mask_1d.npy", mask.ravel())
    (bad / "mask_text.npy").write_text("not numpy")
    labels_stack = np.stack([mask] * n).astype(np.uint8)
    tifffile.imwrite(bad / "labels_ok.tif", labels_stack)
    tifffile.imwrite(bad / "labels_float.tif", np.stack([mask] * n).astype(np.float32) + 0.5)
    tifffile.imwrite(bad / "labels_wrong_n.tif", labels_stack[:3])
    tifffile.imwrite(bad / "labels_wrong_hw.tif", labels_stack[:, :16, :16])
    tifffile.imwrite(bad / "labels_nan.tif", np.full((h, w), np.nan, np.float32))
    # --- fields
    u = np.load(p["field"])
    np.save(bad / "field_nan.npy", np.where(np.ones_like(u, bool), np.nan, u).astype(np.float32))
    v = u.copy()
    v[0, 0, 5, 5] = np.inf
    np.save(bad / "field_inf.npy", v)
    np.save(bad / "field_huge.npy", np.full_like(u, 1e30))
    np.save(bad / "field_large.npy", np.full_like(u, 1e4))
    np.save(bad / "field_3d.npy", u[:, 0])
    np.save(bad / "field_wrong_n.npy", u[:3])
    np.save(bad / "field_wrong_hw.npy", u[:, :, :16, :16])
    np.save(bad / "field_3comp.npy", np.concatenate([u, u[:, :1]], 1))
    np.save(bad / "field_int.npy", u.astype(np.int64))
    np.save(bad / "field_float64.npy", u.astype(np.float64))
    rawf = p["field"].read_bytes()
    (bad / "field_truncated.npy").write_bytes(rawf[: len(rawf) // 2])
    (bad / "field_header_only.npy").write_bytes(rawf[:128])
    # --- landmarks
    lm = ["frame,name,y,x"] + [f"{k},p1,{h / 2 + 0.3 * k},{w / 2}" for k in range(n)] + \
        [f"{k},p2,{h / 3},{w / 3 + 0.2 * k}" for k in range(n)]
    (bad / "lm_ok.csv").write_text("\n".join(lm) + "\n")
    (bad / "lm_empty.csv").write_text("")
    (bad / "lm_header_only.csv").write_text("frame,name,y,x\n")
    (bad / "lm_missing_col.csv").write_text("frame,name,y\n0,p,3\n1,p,4\n")
    (bad / "lm_nan.csv").write_text("frame,name,y,x\n0,p,nan,3\n1,p,inf,4\n")
    (bad / "lm_frame_range.csv").write_text("frame,name,y,x\n0,p,3,3\n99,p,3,3\n")
    (bad / "lm_frame_negative.csv").write_text("frame,name,y,x\n-1,p,3,3\n0,p,3,3\n")
    (bad / "lm_frame_float.csv").write_text("frame,name,y,x\n0.5,p,3,3\n1,p,3,3\n")
    (bad / "lm_outside.csv").write_text("frame,name,y,x\n0,p,1e6,-1e6\n1,p,1e6,-1e6\n")
    (bad / "lm_text.csv").write_text("frame,name,y,x\nzero,p,a,b\n")
    (bad / "lm_binary.csv").write_bytes(os.urandom(500))
    # --- 2-D maps for ecv / segments (rings as in tests/cli/test_cli_ecv.py)
    size = 48
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    lab = np.zeros((size, size), np.uint8)
    lab[r < 8] = 1
    lab[(r >= 8) & (r < 14)] = 2
    lab[(r >= 15) & (r < 21) & (xx < size / 2 - 6)] = 3
    native = np.full((size, size), 1200.0)
    post = np.full((size, size), 500.0)
    for value, (t1n, t1p) in {1: (1550.0, 300.0), 2: (1000.0, 450.0), 3: (1550.0, 300.0)}.items():
        native[lab == value], post[lab == value] = t1n, t1p
    np.save(bad / "native.npy", native)
    np.save(bad / "post.npy", post)
    np.save(bad / "labels.npy", lab)
    np.save(bad / "labels_no_blood.npy", np.where(lab == 1, 0, lab).astype(np.uint8))
    np.save(bad / "labels_no_myo.npy", np.where(lab == 2, 0, lab).astype(np.uint8))
    np.save(bad / "labels_small.npy", lab[:20, :20])
    np.save(bad / "labels_float.npy", lab.astype(np.float32) + 0.3)
    np.save(bad / "labels_negative.npy", -lab.astype(np.int16))
    np.save(bad / "labels_huge.npy", lab.astype(np.int64) * 10**12)
    np.save(bad / "native_nan.npy", np.full((size, size), np.nan))
    np.save(bad / "native_inf.npy", np.full((size, size), np.inf))
    np.save(bad / "native_zero.npy", np.zeros((size, size)))
    np.save(bad / "native_negative.npy", -native)
    np.save(bad / "post_small.npy", post[:20, :20])
    np.save(bad / "map_3d.npy", np.stack([native] * 3))
    np.save(bad / "map_1d.npy", native.ravel())
    np.save(bad / "map_bool.npy", native > 1100)
    # --- weights (copies under the temporary folder only)
    wd = tmp / "weights"
    wd.mkdir()
    wraw = WEIGHTS.read_bytes()
    (wd / "empty.pt").write_bytes(b"")
    (wd / "text.pt").write_text("not a zip\n")
    (wd / "truncated.pt").write_bytes(wraw[: len(wraw) // 2])
    wc = bytearray(wraw)
    for i in range(len(wc) // 3, len(wc) // 3 + 4096):
        wc[i] ^= 0x5A
    (wd / "corrupted_middle.pt").write_bytes(bytes(wc))
    wc = bytearray(wraw)
    for i in range(len(wc) - 20000, len(wc) - 16000):
        wc[i] ^= 0xFF
    (wd / "corrupted_tail.pt").write_bytes(bytes(wc))
    for how in ("nan", "huge", "nan_one", "no_keys", "wrong_shapes", "list"):
        _weights_variant(wd / f"{how}.pt", how)
    import zipfile

    with zipfile.ZipFile(wd / "other_zip.pt", "w") as z:
        z.writestr("hello.txt", "a zip, not a checkpoint")
    (wd / "dir.pt").mkdir()
    # --- batch lists
    (bad / "list_no_path.csv").write_text("id,kind\na,molli\n")
    (bad / "list_missing.csv").write_text(f"path\n{bad / 'nope.tif'}\n")
    (bad / "list_empty.csv").write_text("")
    (bad / "list_dup.csv").write_text(f"path,id\n{p['molli']},a\n{p['molli']},a\n")
    mixed = bad / "cohort_mixed"
    mixed.mkdir()
    shutil.copy(p["molli"], mixed / "good.tif")
    shutil.copy(bad / "truncated.tif", mixed / "broken.tif")
    shutil.copy(bad / "all_nan.tif", mixed / "allnan.tif")
    cohort = bad / "cohort"
    cohort.mkdir()
    for k in range(3):
        shutil.copy(p["molli"], cohort / f"s{k}.tif")
    # --- outputs
    (tmp / "out_exists").mkdir()
    (tmp / "out_exists" / "registered.tif").write_bytes(b"old")
    (tmp / "out_file").write_text("a file where a folder goes\n")
    ro = tmp / "readonly"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    p["bad"], p["weights"], p["tmp"] = bad, wd, tmp
    return p


# --------------------------------------------------------------------------- the cases


def numeric_flags() -> dict[str, list[tuple[str, str]]]:
    """``{command: [(flag, 'int'|'float'), ...]}`` of every numeric option, read from the parser."""
    from napari_any2reg.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags: dict[str, list[tuple[str, str]]] = {}
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if not action.option_strings or action.nargs == 0 or action.choices:
                continue
            tname = getattr(action.type, "__name__", "")
            kind = "int" if action.type is int else (
                "float" if action.type is float or tname in ("_positive_float", "_fraction") else (
                    "int" if tname == "erode_px" else None))
            if kind:
                flags.setdefault(name, []).append((action.option_strings[-1], kind))
    return flags


def _engine_for(flag: str) -> list[str]:
    if flag in ("--reference-frame", "--metric", "--iterations-scale", "--regulariser-weight", "--bins",
                "--pca-components"):
        return ["--engine", "groupwise"] + ([] if flag == "--iterations-scale" else ["--iterations-scale", "0.1"])
    if flag in ("--n-classes", "--n-levels", "--em-steps"):
        return ["--engine", "xcoreg", "--iterations-scale", "0.1"]
    if flag == "--io-steps":
        return ["--engine", "any2reg-io"]
    if flag == "--io-learning-rate":
        return ["--engine", "any2reg-io", "--io-steps", "2", "--refinement", "instance"]
    return FAST


def build_cases(p: dict[str, Path]) -> list[Case]:
    bad, tmp, wd = p["bad"], p["tmp"], p["weights"]
    molli, field_ok = str(p["molli"]), str(p["field"])
    counter = iter(range(100000))
    cases: list[Case] = []

    def out(label: str = "o") -> str:
        return str(tmp / "outs" / f"{label}{next(counter):04d}")

    def add(name, group, args, **kw):
        cases.append(Case(name, group, args, **kw))

    # ---- valid controls
    o = out()
    add("register any2reg (control)", "control", ["register", molli, "-o", o] + FAST, expect="ok", out=o)
    o = out()
    add("register groupwise (control)", "control", ["register", molli, "-o", o] + GW, expect="ok", out=o)
    o = out()
    add("register xcoreg (control)", "control", ["register", molli, "-o", o] + XC, expect="ok", out=o)
    o = out()
    add("register DICOM folder (control)", "control", ["register", str(bad / "dicom_ok"), "-o", o] + FAST,
        expect="ok", out=o)
    o = out()
    add("register mask (control)", "control", ["register", molli, "-o", o, "--mask", str(bad / "mask_ok.npy")] + GW,
        expect="ok", out=o)
    o = out()
    add("register export all + landmarks (control)", "control",
        ["register", molli, "-o", o, "--export", "all", "--landmarks", str(bad / "lm_ok.csv")] + FAST,
        expect="ok", out=o)
    o = out()
    add("fit (control)", "control", ["fit", molli, "-o", o], expect="ok", out=o)
    add("tre (control)", "control", ["tre", field_ok, str(bad / "lm_ok.csv")], expect="ok")
    o = out() + ".tif"
    add("apply image (control)", "control", ["apply", field_ok, molli, "-o", o], expect="ok", out=o)
    o = out() + ".tif"
    add("apply labels (control)", "control", ["apply", field_ok, str(bad / "labels_ok.tif"), "-o", o, "--labels"],
        expect="ok", out=o)
    o = out() + ".csv"
    add("apply landmarks (control)", "control", ["apply", field_ok, str(bad / "lm_ok.csv"), "-o", o],
        expect="ok", out=o)
    o = out()
    add("ecv maps (control)", "control", ["ecv", str(bad / "native.npy"), str(bad / "post.npy"), "-o", o,
                                          "--mask", str(bad / "labels.npy"), "--hematocrit", "0.42",
                                          "--no-register"], expect="ok", out=o)
    o = out()
    add("segments (control)", "control", ["segments", str(bad / "native.npy"), "-o", o, "--mask",
                                          str(bad / "labels.npy"), "--rv-insertion", "14,18;34,18"],
        expect="ok", out=o)
    add("engines (control)", "control", ["engines"], expect="ok")
    o = out()
    add("sample (control)", "control", ["sample", "sasha", "-o", o + ".tif", "--size", "32"], expect="ok",
        out=o + ".tif")
    o = out()
    add("batch (control)", "control", ["batch", str(bad / "cohort"), "-o", o, "--engine", "any2reg", "--jobs", "1"],
        expect="ok", out=o)
    o = out()
    add("train 2 steps (control)", "control", ["train", "--out", o, "--steps", "2", "--size", "32",
                                               "--validate-every", "1"], expect="ok", out=o)

    # ---- numeric options of every command, read from the parser
    flags = numeric_flags()
    seen_kind: set[str] = set()
    for flag, kind in flags.get("register", []):
        values = (INT_VALUES if kind == "int" else FLOAT_VALUES) if kind not in seen_kind else (
            INT_EVERY_FLAG if kind == "int" else FLOAT_EVERY_FLAG)
        seen_kind.add(kind)
        for value in values:
            o = out()
            eng = _engine_for(flag)
            if flag == "--iterations-scale" and value in ("1e30", "inf"):
                pass  # the point: a huge iteration count must be refused, not run
            add(f"register {flag} {value}", "numeric: register", ["register", molli, "-o", o] + eng + [flag, value],
                out=o)
    o = out()
    add("register --reference-frame 8 (= N)", "numeric: register",
        ["register", molli, "-o", o] + GW + ["--reference-frame", "8"], out=o)
    for flag, kind in flags.get("batch", []):
        if flag not in ("--jobs", "--threads", "--r2-threshold", "--regulariser-weight", "--reference-frame"):
            continue  # the engine options are shared with register (one validation); spot-check a few
        for value in (["-1", "0"] if kind == "int" else ["nan", "-1"]):
            o = out()
            eng = _engine_for(flag) if flag in ("--regulariser-weight", "--reference-frame") else FAST
            add(f"batch {flag} {value}", "numeric: batch", ["batch", molli, "-o", o, "--jobs", "1"] + eng +
                [flag, value], out=o)
    for flag, kind in flags.get("fit", []):
        for value in (["-1", "0"] if kind == "int" else ["nan", "inf", "-1", "1e30"]):
            o = out()
            add(f"fit {flag} {value}", "numeric: fit", ["fit", molli, "-o", o] + (
                ["--model", "t2"] if flag == "--noise-floor" else []) + [flag, value], out=o)
    for flag, kind in flags.get("sample", []):
        for value in (["-1", "0", "1", "1.5", "100000"] if flag == "--size" else ["-1", str(2**70)]):
            o = out() + ".tif"
            add(f"sample {flag} {value}", "numeric: sample", ["sample", "molli", "-o", o] +
                (["--size", "32"] if flag != "--size" else []) + [flag, value], out=o)
    for flag, kind in flags.get("apply", []):
        for value in ["-1", "1"]:
            o = out() + ".tif"
            add(f"apply {flag} {value}", "numeric: apply", ["apply", field_ok, molli, "-o", o, flag, value], out=o)
    for flag, kind in flags.get("ecv", []):
        values = {"--hematocrit": ["nan", "inf", "-0.1", "0", "1.5"],
                  "--erode-px": ["-1", "1000"], "--threads": ["0"]}.get(flag, ["nan", "-1"])
        for value in values:
            o = out()
            base = ["ecv", str(bad / "native.npy"), str(bad / "post.npy"), "-o", o, "--mask", str(bad / "labels.npy"),
                    "--no-register"] + ([] if flag == "--hematocrit" else ["--hematocrit", "0.42"])
            add(f"ecv {flag} {value}", "numeric: ecv", base + [flag, value], out=o)
    for flag, kind in flags.get("segments", []):
        for value in ["-1", "1000"]:
            o = out()
            add(f"segments {flag} {value}", "numeric: segments",
                ["segments", str(bad / "native.npy"), "-o", o, "--mask", str(bad / "labels.npy"),
                 "--rv-insertion", "14,18;34,18", flag, value], out=o)
    for flag, kind in flags.get("train", []):
        values = ["-1"] if kind == "int" else ["nan"]
        if flag in ("--steps", "--size", "--lr"):
            values = ["0", "1000000000"] if kind == "int" else ["nan", "1e30"]
        for value in values:
            o = out()
            args = ["train", "--out", o, "--size", "32"] + (["--steps", "2"] if flag != "--steps" else [])
            add(f"train {flag} {value}", "numeric: train", args + [flag, value], out=o)
    for value in ["nan,1", "5,1", "0,0"]:
        o = out()
        add(f"train --spacing-mm-range {value}", "numeric: train",
            ["train", "--out", o, "--steps", "2", "--size", "32", "--spacing-mm-range", value,
             "--size-px-range", "32,48"], out=o)
    for value in ["7,9", "32,100000"]:
        o = out()
        add(f"train --size-px-range {value}", "numeric: train",
            ["train", "--out", o, "--steps", "2", "--size", "32", "--size-px-range", value,
             "--spacing-mm-range", "2,3"], out=o)
    for value in ["nan,5", "0,1e30"]:
        o = out()
        add(f"train --motion-mm {value}", "numeric: train",
            ["train", "--out", o, "--steps", "2", "--size", "32", "--motion-mm", value], out=o)

    # ---- list-valued options
    n = 8
    for value in ["nan," * (n - 1) + "nan", "1,2", ",".join(["-100"] * n), "", ",".join(["1e300"] * n),
                  ",".join(["100"] * n)]:
        o = out()
        add(f"register --times-ms {value[:30]!r}", "lists", ["register", molli, "-o", o, "--times-ms", value] + FAST,
            out=o)
    for value in ["nan,1", "0,1", "-1,1", "1e300,1e300", "inf,inf", "1e-300,1e-300"]:
        o = out()
        add(f"register --spacing-mm {value}", "lists", ["register", molli, "-o", o, "--spacing-mm", value] + FAST,
            out=o)
    for value in ["nan,nan"]:
        add(f"tre --spacing-mm {value}", "lists", ["tre", field_ok, str(bad / "lm_ok.csv"), "--spacing-mm", value])
    for value in ["5", "-1"]:
        o = out()
        add(f"register --slice {value}", "lists", ["register", molli, "-o", o, "--slice", value] + FAST, out=o)
    for value in ["stack,nope", "landmarks"]:
        o = out()
        add(f"register --export {value}", "lists", ["register", molli, "-o", o, "--export", value] + FAST, out=o)
    for value in ["1000,1000;2000,2000", "nan,nan;nan,nan", "14,18;14,18", "24,24;24,24"]:
        o = out()
        add(f"segments --rv-insertion {value!r}", "lists",
            ["segments", str(bad / "native.npy"), "-o", o, "--mask", str(bad / "labels.npy"), "--rv-insertion", value],
            out=o)
    for value in ["99", ",".join(str(k) for k in range(8)), "-1"]:
        o = out()
        add(f"fit --exclude-frames {value}", "lists", ["fit", molli, "-o", o, "--exclude-frames", value], out=o)
    for value in ["t2"]:
        o = out()
        add(f"fit --model {value} on MOLLI", "lists", ["fit", molli, "-o", o, "--model", value], out=o)
    for value in ["cine"]:
        o = out()
        add(f"register --kind {value}", "lists", ["register", molli, "-o", o, "--kind", value] + FAST, out=o)
    o = out()
    add("register --device cuda:99", "lists", ["register", molli, "-o", o, "--device", "cuda:99"] + FAST, out=o)

    # ---- input files: register, fit, and a few for the other commands
    files = ["nope.tif", "empty.tif", "empty.nii.gz", "empty.npy", "empty.dcm", 
             "text.nii.gz", "garbage.nii.gz", "random.tif", "random.dcm", "series.txt", "noext",
             "truncated.tif", "truncated_header.tif", "corrupted.tif", "image.tif", "truncated.dcm", "header_only.dcm",
             "dicom_with_truncated", "dicom_one_frame", "dicom_zero_byte_in_folder", "not_dicom_folder",
             "empty_folder", "dir.tif", "fifo.tif", "fifo.dcm", "unreadable.tif", "frame2d.tif", "one_frame.tif",
             "two_frames.tif", "tiny_1px.tif", "thin_1row.tif", "stack4d.tif", "stack5d.tif",
             "rgb.tif", "complex.tif", "bool.tif", "frame2d.nii.gz", "six_d.nii.gz", "nan.nii.gz",
             "huge_dims.nii.gz", "huge_dims.nii", "huge_tags.tif", "nan_patch.tif", "inf_pixel.tif", "nan_frame.tif",
             "all_nan.tif", "all_const.tif", "one_const_frame.tif", "huge_values.tif",
             "ti_nan.tif", "ti_negative.tif", "ti_short.tif", "ti_dup.tif", "sidecar_short.tif",
             "sidecar_nan.tif", "sidecar_text.tif", "sidecar_spacing.tif", "sidecar_kind.tif", "sidecar_broken.tif"]
    for f in files:
        o = out()
        skip = "running as root: permissions do not apply" if f == "unreadable.tif" and IS_ROOT else None
        add(f"register {f}", "input files", ["register", str(bad / f), "-o", o] + FAST, out=o, skip=skip)
    for f in ["nan_patch.tif", "huge_values.tif"]:
        o = out()
        add(f"register groupwise {f}", "input files", ["register", str(bad / f), "-o", o] + GW, out=o)
    for f in ["fifo.tif", "frame2d.tif", "two_frames.tif", "all_nan.tif", "ti_nan.tif", "ti_dup.tif",
              "nan_frame.tif", "inf_pixel.tif", "huge_values.tif"]:
        o = out()
        add(f"fit {f}", "input files", ["fit", str(bad / f), "-o", o], out=o)

    # ---- masks
    for f in ["mask_small.npy", "mask_3d.npy", "mask_nan.npy", "mask_zero.npy", "mask_object.npy",
              "mask_complex.npy", "mask_text.npy", "fifo.npy"]:
        o = out()
        add(f"register --mask {f}", "masks", ["register", molli, "-o", o, "--mask", str(bad / f)] + GW, out=o)
    for f in ["mask_small.npy", "mask_nan.npy"]:
        o = out()
        add(f"fit --mask {f}", "masks", ["fit", molli, "-o", o, "--mask", str(bad / f)], out=o)
    for f in ["labels_no_blood.npy", "labels_small.npy", "labels_float.npy", "labels_huge.npy"]:
        o = out()
        add(f"ecv --mask {f}", "masks", ["ecv", str(bad / "native.npy"), str(bad / "post.npy"), "-o", o, "--mask",
                                         str(bad / f), "--hematocrit", "0.42", "--no-register"], out=o)
        o = out()
        add(f"segments --mask {f}", "masks", ["segments", str(bad / "native.npy"), "-o", o, "--mask", str(bad / f),
                                              "--rv-insertion", "14,18;34,18"], out=o)
    for a, b in [("native_nan.npy", "post.npy"), ("native_inf.npy", "post.npy"), 
                 ("native_negative.npy", "post.npy"), ("native.npy", "post_small.npy"), ("map_3d.npy", "post.npy")]:
        o = out()
        add(f"ecv {a} {b}", "maps", ["ecv", str(bad / a), str(bad / b), "-o", o, "--mask", str(bad / "labels.npy"),
                                     "--hematocrit", "0.42", "--no-register"], out=o)
    o = out()
    add("ecv MOLLI series vs 2-D map", "maps", ["ecv", molli, str(bad / "post.npy"), "-o", o, "--mask",
                                                str(bad / "labels.npy"), "--hematocrit", "0.42"], out=o)
    o = out()
    add("ecv --synthetic-hematocrit on constant blood 0", "maps",
        ["ecv", str(bad / "native_zero.npy"), str(bad / "post.npy"), "-o", o, "--mask", str(bad / "labels.npy"),
         "--synthetic-hematocrit", "--no-register"], out=o)
    for f in ["native_nan.npy", "native_inf.npy", "map_3d.npy", "map_bool.npy"]:
        o = out()
        add(f"segments {f}", "maps", ["segments", str(bad / f), "-o", o, "--mask", str(bad / "labels.npy"),
                                      "--rv-insertion", "14,18;34,18"], out=o)

    # ---- fields (apply, tre)
    for f in ["field_nan.npy", "field_inf.npy", "field_huge.npy", "field_large.npy", "field_3d.npy",
              "field_wrong_n.npy", "field_wrong_hw.npy", "field_3comp.npy", "field_int.npy",
              "field_truncated.npy", "empty.npy", "fifo.npy", "frame2d.tif"]:
        o = out() + ".tif"
        add(f"apply {f} image", "fields", ["apply", str(bad / f), molli, "-o", o], out=o)
    for f in ["field_nan.npy", "field_huge.npy"]:
        o = out() + ".tif"
        add(f"apply {f} --labels", "fields", ["apply", str(bad / f), str(bad / "labels_ok.tif"), "-o", o, "--labels"],
            out=o)
        o = out() + ".csv"
        add(f"apply {f} landmarks", "fields", ["apply", str(bad / f), str(bad / "lm_ok.csv"), "-o", o], out=o)
        add(f"tre {f}", "fields", ["tre", str(bad / f), str(bad / "lm_ok.csv")])
    for f in ["labels_float.tif", "labels_wrong_hw.tif", "labels_nan.tif"]:
        o = out() + ".tif"
        add(f"apply --labels {f}", "fields", ["apply", field_ok, str(bad / f), "-o", o, "--labels"], out=o)
    for f in ["two_frames.tif", "tiny_3px.tif", "all_nan.tif"]:
        o = out() + ".tif"
        add(f"apply image {f}", "fields", ["apply", field_ok, str(bad / f), "-o", o], out=o)
    for ext in [".xyz", ""]:
        o = out() + ext
        add(f"apply output extension {ext or 'none'!r}", "fields", ["apply", field_ok, molli, "-o", o], out=o)
    for f in ["lm_empty.csv", "lm_header_only.csv", "lm_missing_col.csv", "lm_nan.csv", "lm_frame_range.csv",
              "lm_frame_negative.csv", "lm_frame_float.csv", "lm_outside.csv", "lm_binary.csv", "fifo.csv"]:
        add(f"tre {f}", "landmarks", ["tre", field_ok, str(bad / f)])
    for f in ["lm_nan.csv", "lm_frame_range.csv", "lm_outside.csv", "lm_text.csv"]:
        o = out() + ".csv"
        add(f"apply landmarks {f}", "landmarks", ["apply", field_ok, str(bad / f), "-o", o], out=o)
    for f in ["lm_nan.csv", "lm_frame_range.csv"]:
        o = out()
        add(f"register --landmarks {f}", "landmarks",
            ["register", molli, "-o", o, "--export", "landmarks", "--landmarks", str(bad / f)] + FAST, out=o)

    # ---- weights
    for f in ["empty.pt", "text.pt", "truncated.pt", "corrupted_middle.pt", "corrupted_tail.pt", "nan.pt", "huge.pt",
              "nan_one.pt", "no_keys.pt", "wrong_shapes.pt", "list.pt", "other_zip.pt", "dir.pt"]:
        o = out()
        add(f"register --weights {f}", "weights", ["register", molli, "-o", o, "--weights", str(wd / f)] + FAST, out=o)
    o = out()
    add("register --weights fifo.pt", "weights", ["register", molli, "-o", o, "--weights", str(bad / "fifo.pt")] + FAST,
        out=o)
    o = out()
    add("register --weights any2reg-v999 (unknown name)", "weights",
        ["register", molli, "-o", o, "--weights", "any2reg-v999"] + FAST, out=o)
    for f in ["huge.pt", "corrupted_middle.pt"]:
        o = out()
        add(f"batch --weights {f}", "weights", ["batch", molli, "-o", o, "--jobs", "1", "--weights", str(wd / f)] + FAST,
            out=o)
        o = out()
        add(f"train --init-weights {f}", "weights", ["train", "--out", o, "--steps", "2", "--size", "32",
                                                     "--init-weights", str(wd / f)], out=o)
    o = out()
    add("ecv series --weights-free (engine any2reg) on nan native series", "weights",
        ["ecv", str(bad / "all_nan.tif"), molli, "-o", o, "--mask", str(bad / "mask_ok.npy"), "--hematocrit", "0.42"],
        out=o)

    # ---- outputs
    add("register into an existing output without --overwrite", "outputs",
        ["register", molli, "-o", str(tmp / "out_exists")] + FAST, out=str(tmp / "out_exists"))
    add("register -o an existing file", "outputs", ["register", molli, "-o", str(tmp / "out_file")] + FAST)
    add("register -o the input file", "outputs", ["register", molli, "-o", molli] + FAST)
    add("register -o under a file", "outputs", ["register", molli, "-o", str(tmp / "out_file" / "sub")] + FAST)
    add("register -o the input's own folder", "outputs", ["register", molli, "-o", str(tmp)] + FAST)
    add("register into a read-only folder", "outputs",
        ["register", molli, "-o", str(tmp / "readonly" / "out")] + FAST,
        skip="running as root: a read-only folder is writable" if IS_ROOT else None)
    add("register -o ''", "outputs", ["register", molli, "-o", ""] + FAST)
    o = out() + ".tif"
    add("apply -o the field itself", "outputs", ["apply", field_ok, molli, "-o", field_ok])
    add("apply -o an existing file without --overwrite", "outputs", ["apply", field_ok, molli, "-o", molli])
    add("apply -o a folder", "outputs", ["apply", field_ok, molli, "-o", str(tmp / "out_exists")])
    add("sample -o an existing file without --overwrite", "outputs", ["sample", "molli", "-o", molli, "--size", "32"])
    add("tre --out an existing file without --overwrite", "outputs",
        ["tre", field_ok, str(bad / "lm_ok.csv"), "--out", molli])
    add("fit -o an existing file", "outputs", ["fit", molli, "-o", str(tmp / "out_file")])
    add("train --out an existing file", "outputs", ["train", "--out", str(tmp / "out_file"), "--steps", "2",
                                                    "--size", "32"])
    add("train --user-data empty folder", "outputs", ["train", "--out", out(), "--steps", "2", "--size", "32",
                                                      "--user-data", str(bad / "empty_folder")])
    add("train --real-data missing file", "outputs", ["train", "--out", out(), "--steps", "2", "--size", "32",
                                                      "--real-data", str(bad / "nope.tif")])
    add("train --real-data corrupted", "outputs", ["train", "--out", out(), "--steps", "2", "--size", "32",
                                                   "--real-data", str(bad / "truncated.tif")])

    # ---- batch
    add("batch empty folder", "batch", ["batch", str(bad / "empty_folder"), "-o", out(), "--jobs", "1"] + FAST)
    add("batch no inputs", "batch", ["batch", "-o", out(), "--jobs", "1"] + FAST)
    for f in ["list_no_path.csv", "list_missing.csv", "list_dup.csv"]:
        add(f"batch --list {f}", "batch", ["batch", "--list", str(bad / f), "-o", out(), "--jobs", "1"] + FAST)
    add("batch cohort with broken series (exit 3 expected)", "batch",
        ["batch", str(bad / "cohort_mixed"), "-o", out(), "--jobs", "1"] + FAST)
    add("batch -o an existing file", "batch", ["batch", molli, "-o", str(tmp / "out_file"), "--jobs", "1"] + FAST)
    add("batch --scheduler unreachable", "batch",
        ["batch", molli, "-o", out(), "--scheduler", "tcp://127.0.0.1:9"] + FAST)
    add("batch fifo input", "batch", ["batch", str(bad / "fifo.tif"), "-o", out(), "--jobs", "1"] + FAST)

    shared = str(tmp / "outs" / "batch_shared")

    def start_first():
        proc = subprocess.Popen(CLI + ["batch", str(bad / "cohort"), "-o", shared, "--jobs", "1",
                                       "--engine", "groupwise", "--overwrite"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                                start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline and not any(Path(shared).glob("*lock*")) and not any(
                Path(shared).glob(".*lock*")):
            time.sleep(0.2)
        time.sleep(1.0)
        return proc

    def stop_first(proc):
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    add("batch: a second run on a folder in use", "batch",
        ["batch", str(bad / "cohort"), "-o", shared, "--jobs", "1"] + FAST, pre=start_first, post=stop_first)

    killed = str(tmp / "outs" / "batch_killed")

    def start_and_kill():
        proc = subprocess.Popen(CLI + ["batch", str(bad / "cohort"), "-o", killed, "--jobs", "1",
                                       "--engine", "groupwise"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                                start_new_session=True)
        time.sleep(8)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None

    add("batch after a SIGKILLed run on the same folder (stale lock)", "batch",
        ["batch", str(bad / "cohort"), "-o", killed, "--jobs", "1", "--engine", "groupwise"], pre=start_and_kill,
        expect="ok",
        out=killed)
    return cases


# --------------------------------------------------------------------------- running and judging


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _load_numeric(path: Path):
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asanyarray(nib.load(str(path)).dataobj)
    return None


#: outputs where NaN marks a failed / missing value (allowed, but not everywhere)
_NAN_ALLOWED = ("t1", "r2", "sd", "t2", "ecv", "params", "jacobian", "uncertainty", "native_t1", "post_t1", "map",
                "correspondence")


def sanity(case: Case) -> str:
    """'' when what an exit 0 wrote looks right, else what is wrong."""
    if case.out is None:
        return ""
    target = Path(case.out)
    if not target.exists():
        return f"no output at {target.name}"
    files = [target] if target.is_file() else [f for f in target.rglob("*") if f.is_file()]
    if not files:
        return "output folder empty"
    problems = []
    for f in files:
        if f.stat().st_size == 0:
            problems.append(f"{f.name}: zero bytes")
            continue
        if f.suffix == ".json":
            text = f.read_text(errors="replace")
            if "NaN" in text or "Infinity" in text:
                problems.append(f"{f.name}: NaN/Infinity in JSON")
            continue
        try:
            arr = _load_numeric(f)
        except Exception as exc:
            problems.append(f"{f.name}: unreadable ({type(exc).__name__})")
            continue
        if arr is None or not np.issubdtype(np.asarray(arr).dtype, np.number):
            continue
        arr = np.asarray(arr, dtype=np.float64)
        stem = f.name.lower()
        if np.isinf(arr).any():
            problems.append(f"{f.name}: Inf values")
        elif np.isnan(arr).all() and arr.size:
            problems.append(f"{f.name}: all NaN")
        elif np.isnan(arr).any() and not any(k in stem for k in _NAN_ALLOWED):
            problems.append(f"{f.name}: NaN values")
        if "displacement" in stem and stem.endswith(".npy") and arr.ndim == 4:
            extent = max(arr.shape[-2:])
            if np.nanmax(np.abs(arr)) > extent:
                problems.append(f"{f.name}: |u| {np.nanmax(np.abs(arr)):.3g} px > image extent {extent}")
    return "; ".join(problems[:3])


def classify(case: Case, rc: int | None, stdout: str, stderr: str, timed_out: bool) -> tuple[str, str]:
    text = stdout + stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if timed_out:
        return "hang", ""
    if rc is not None and (rc < 0 or rc in (134, 137, 139)):
        return "crash", f"signal {-rc}" if rc < 0 else f"rc {rc}"
    if "Traceback" in text:
        return "traceback", ""
    if rc == 0:
        note = sanity(case)
        if note:
            return "exit 0 garbage", note
        return ("ok", "") if case.expect == "ok" else ("exit 0", "accepted, outputs look sane")
    if case.expect == "ok":
        return "valid failed", ""
    # argparse's usage text (the 'usage:' line and its indented continuation) is not the message
    errors = [ln for ln in lines if not ln.startswith(("any2reg: note:", "note:", "running ", "[", "usage:", " ",
                                                        "check:", "good:"))]
    if not errors:
        return "noisy error", "no message on stderr"
    if len(errors) > MAX_ERROR_LINES:
        return "noisy error", f"{len(errors)} lines on stderr"
    return "clean error", ""


def run_case(case: Case, timeout: float) -> dict:
    if case.skip:
        return {"class": "skipped", "note": case.skip, "rc": None, "seconds": 0.0, "stderr_tail": ""}
    state = case.pre() if case.pre else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(CLI + case.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=_env(), cwd=str(WORKDIR),
                            start_new_session=True, preexec_fn=_limits, text=True, errors="replace")
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=case.timeout or timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    # a batch's Dask workers live in the same session: leave none behind
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if case.post:
        case.post(state)
    cls, note = classify(case, proc.returncode, stdout, stderr, timed_out)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    tail = lines[-1] if lines else (stdout.strip().splitlines() or [""])[-1]
    return {"class": cls, "note": note, "rc": proc.returncode, "seconds": round(seconds, 2),
            "stderr_tail": tail[:400], "stderr_lines": len(lines),
            "stderr_last_lines": "\n".join(stderr.splitlines()[-8:]) if cls not in ("ok", "clean error") else ""}


def _digest(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        if p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _display(args: list[str], tmp: Path) -> str:
    text = " ".join(a if a and " " not in a and ";" not in a else repr(a) for a in args)
    return "any2reg " + text.replace(str(tmp), "$TMP")


CLASSES = ["ok", "clean error", "exit 0", "noisy error", "valid failed", "exit 0 garbage", "traceback", "crash", "hang",
           "skipped"]
BAD = ("traceback", "crash", "hang", "exit 0 garbage", "valid failed", "noisy error", "exit 0")


def write_results(cases: list[Case], tmp: Path, seconds: float, changed: list[str], stem: str) -> None:
    counts = {c: 0 for c in CLASSES}
    for case in cases:
        counts[case.result["class"]] = counts.get(case.result["class"], 0) + 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    records = [{"name": c.name, "group": c.group, "expect": c.expect, "command": _display(c.args, tmp), **c.result}
               for c in cases]
    (RESULTS / f"{stem}.json").write_text(json.dumps({
        "cases": len(cases), "counts": counts, "seconds": round(seconds, 1), "inputs_modified": changed,
        "python": platform.python_version(), "machine": platform.machine(), "root": IS_ROOT,
        "timeout_s": TIMEOUT, "results": records}, indent=1) + "\n")
    md = [f"# Hostile-input sweep of the any2reg CLI (issue 24)", "",
          f"`OMP_NUM_THREADS=1 python benchmarks/bench_hostile_inputs.py`: {len(cases)} cases, each in its own "
          f"process (timeout per case, 6 GiB address-space limit), sequentially, {seconds / 60:.1f} min on "
          f"{os.cpu_count()} cores{' (as root: permission cases skipped)' if IS_ROOT else ''}. `$TMP` is the "
          "temporary folder of the inputs (see the script for how each one is built).", "",
          "| class | cases |", "|---|---|"]
    md += [f"| {c} | {n} |" for c, n in counts.items() if n or c in ("traceback", "crash", "hang", "exit 0 garbage")]
    md += ["", f"Shared inputs modified by any case: {', '.join(changed) if changed else 'none'}.", ""]
    groups: dict[str, dict[str, int]] = {}
    for case in cases:
        groups.setdefault(case.group, {}).setdefault(case.result["class"], 0)
        groups[case.group][case.result["class"]] += 1
    md += ["## Per group", "", "| group | " + " | ".join(CLASSES) + " |", "|---" * (len(CLASSES) + 1) + "|"]
    for g, cnt in groups.items():
        md.append(f"| {g} | " + " | ".join(str(cnt.get(c, "")) for c in CLASSES) + " |")
    md += ["", "## Cases that are not a clean error or ok", "",
           "Ordered by severity. 'exit 0' rows are hostile inputs that were accepted and wrote outputs that look "
           "sane (finite, displacement within the image extent): listed for review, not counted as garbage.", "",
           "| class | case | command | rc | last stderr line / note |", "|---|---|---|---|---|"]
    order = {c: i for i, c in enumerate(["crash", "hang", "traceback", "exit 0 garbage", "valid failed",
                                          "noisy error", "exit 0", "skipped"])}
    rows = sorted((c for c in cases if c.result["class"] not in ("ok", "clean error")),
                  key=lambda c: order.get(c.result["class"], 99))

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ").replace(str(tmp), "$TMP")

    for c in rows:
        r = c.result
        last = r["stderr_tail"] + (f" ({r['note']})" if r.get("note") else "")
        md.append(f"| {r['class']} | {esc(c.name)} | `{esc(_display(c.args, tmp))}` | {r['rc']} | {esc(last)} |")
    md.append("")
    (RESULTS / f"{stem}.md").write_text("\n".join(md))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default: 60)")
    ap.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    ap.add_argument("--count", action="store_true", help="build the inputs, print the number of cases, run none")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--stem", default="hostile_inputs", help="results file names (default: hostile_inputs)")
    opts = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    global WORKDIR, TIMEOUT
    TIMEOUT = opts.timeout
    tmp = Path(tempfile.mkdtemp(prefix="any2reg-hostile-", dir="/tmp"))
    WORKDIR = tmp / "cwd"
    WORKDIR.mkdir()
    t0 = time.perf_counter()
    try:
        inputs = build_inputs(tmp)
        cases = build_cases(inputs)
        if opts.only:
            cases = [c for c in cases if opts.only in c.name]
        shared = [inputs["molli"], inputs["field"], *sorted(inputs["bad"].glob("*.*")), *inputs["weights"].glob("*.pt")]
        shared = [p for p in shared if p.is_file() and not stat.S_ISFIFO(p.stat().st_mode)]
        before = _digest(shared)
        print(f"{len(cases)} cases under {tmp}", flush=True)
        if opts.count:
            return 0
        for k, case in enumerate(cases, 1):
            case.result = run_case(case, opts.timeout)
            r = case.result
            print(f"[{k}/{len(cases)}] {r['class']:<14} {r['seconds']:6.1f}s  {case.name}  | {r['stderr_tail'][:150]}",
                  flush=True)
        after = _digest(shared)
        changed = sorted(str(Path(p).relative_to(tmp)) for p in before if after.get(p) != before[p])
        seconds = time.perf_counter() - t0
        write_results(cases, tmp, seconds, changed, opts.stem)
        counts: dict[str, int] = {}
        for c in cases:
            counts[c.result["class"]] = counts.get(c.result["class"], 0) + 1
        print(json.dumps(counts), f"{seconds / 60:.1f} min", flush=True)
    finally:
        if not opts.keep:
            for p in tmp.rglob("*"):
                try:
                    if p.is_dir() and not p.is_symlink():
                        os.chmod(p, 0o755)
                except OSError:
                    pass
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
