"""The reader table of io._dispatch drives dispatch, messages and help, and matches napari.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import napari_any2reg
from napari_any2reg.cli import build_parser
from napari_any2reg.io import FILE_EXTENSIONS, SequenceReadError, read_sequence, supported_path
from napari_any2reg.io._common import split_name
from napari_any2reg.io._dispatch import READERS, ReaderFormat, reader_for, reader_patterns, supported_description


def _manifest_patterns() -> set[str]:
    manifest = yaml.safe_load((Path(napari_any2reg.__file__).parent / "napari.yaml").read_text())
    readers = manifest["contributions"]["readers"]
    assert len(readers) == 1
    return set(readers[0]["filename_patterns"])


def test_napari_reader_patterns_equal_the_table():
    assert _manifest_patterns() == reader_patterns()


def test_table_extensions_are_split_as_one_extension():
    for reader in READERS:
        assert isinstance(reader, ReaderFormat)
        for ext in reader.extensions:
            assert ext in FILE_EXTENSIONS, (reader.name, ext)
            assert split_name("scan" + ext.upper()) == ("scan", ext)
            assert "*" + ext in reader.patterns, (reader.name, ext)


def test_dispatch_follows_the_table(tmp_path):
    names = {r.name for r in READERS}
    assert {"TIFF", "NIfTI", "DICOM"} <= names
    assert reader_for(tmp_path / "a.OME.TIF").name == "TIFF"
    assert reader_for(tmp_path / "a.nii.gz").name == "NIfTI"
    assert reader_for(tmp_path / "a.IMA").name == "DICOM"
    assert reader_for(tmp_path).name == "DICOM"  # folders: the reader that accepts them
    assert reader_for([tmp_path / "x"]).name == "DICOM"
    assert reader_for(tmp_path / "a.png") is None
    raw = tmp_path / "IM0001"
    raw.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    assert reader_for(raw).name == "DICOM" and supported_path(raw)


def test_unsupported_message_lists_every_format(tmp_path):
    bad = tmp_path / "a.png"
    bad.write_bytes(b"\x89PNG")
    with pytest.raises(SequenceReadError) as info:
        read_sequence(bad)
    assert supported_description() in str(info.value)
    for reader in READERS:
        assert reader.description in str(info.value)


def test_cli_input_help_comes_from_the_table():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("register", "fit"):
        text = " ".join(commands[name].format_help().split())
        for reader in READERS:
            assert reader.name in text
            for ext in reader.extensions:
                assert ext in text, (name, ext)


def test_a_registered_format_is_dispatched(monkeypatch, tmp_path):
    # a new format is one table entry: dispatch, supported_path and patterns follow
    from napari_any2reg.io import _dispatch
    from napari_any2reg.io.tiff import _tiff_parts_list

    calls = []

    def parts(path):
        calls.append(Path(path))
        return _tiff_parts_list(path.with_suffix(".tif"))

    from napari_any2reg.core.sequence import Sequence
    from napari_any2reg.io import write_tiff

    write_tiff(tmp_path / "s.tif", Sequence(np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)))
    (tmp_path / "s.tst").write_bytes(b"\0")
    monkeypatch.setattr(_dispatch, "READERS", _dispatch.READERS + (ReaderFormat("Test", (".tst",), ("*.tst",), parts, "test files"),))
    assert "*.tst" in _dispatch.reader_patterns() and _dispatch.supported_path(tmp_path / "s.tst")
    assert _dispatch.read_sequence(tmp_path / "s.tst").n_frames == 3 and calls == [tmp_path / "s.tst"]
