"""Bad input the archive loader, decoder and pipeline must survive (issue 16): each test writes
real files (manifests, WAVs, FIFOs, logs) and asserts the exact outcome."""

from __future__ import annotations

import pytest

from raysys.data.archive import ArchiveError, load_manifest

# -- 1. a CSV manifest never merges rows --------------------------------------------------------


def _write_csv(root, text: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text(text)
    return str(root)


def test_csv_unbalanced_quote_is_an_error_naming_the_lines(tmp_path):
    text = ('key,audio,image,label\n'
            'a,"a.wav,a.png,1\n'        # quote opened on line 2 ...
            'b,b.wav,b.png,2\n'
            'c,c.wav",c.png,3\n'        # ... closed on line 4: pandas merges a, b, c
            'd,d.wav,d.png,4\n')
    root = _write_csv(tmp_path / "arch", text)
    with pytest.raises(ArchiveError, match=r"manifest\.csv: lines 2-4: one record spans 3 lines"):
        load_manifest(root)


def test_csv_quote_never_closed_is_an_error(tmp_path):
    root = _write_csv(tmp_path / "arch", 'key,audio\na,a.wav\nb,"b.wav\nc,c.wav\n')
    with pytest.raises(ArchiveError, match=r"manifest\.csv: line"):
        load_manifest(root)


def test_csv_row_with_missing_fields_is_an_error(tmp_path):
    root = _write_csv(tmp_path / "arch", "key,audio,image\na,a.wav,a.png\nb,b.png\n")
    with pytest.raises(ArchiveError, match=r"manifest\.csv: line 3: 2 fields, the header has 3"):
        load_manifest(root)


def test_csv_quoted_commas_blank_lines_and_crlf_still_load(tmp_path):
    text = 'key,audio,label\r\n"a",a.wav,"x, y"\r\n\r\nb,"b,1.wav",z\r\n'
    manifest, bad = load_manifest(_write_csv(tmp_path / "arch", text))
    assert bad == [] and manifest.keys == ["a", "b"]
    assert manifest.views["audio"][1].endswith("/b,1.wav")
    assert manifest.labels["label"].tolist() == ["x, y", "z"]
