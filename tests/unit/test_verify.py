"""Verification of a model directory: what an operator is told before any engine starts, and that
a verified directory is not read again on the next start."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from harness.model_files import (
    hf_cache_model,
    lfs_pointer,
    model_files,
    safetensors_bytes,
    sha256sums,
    write_dir,
)
from vllm_agent.errors import ModelNotFound, ModelSourceError
from vllm_agent_plugins.verify import verify_model_dir
from vllm_agent_plugins.verify_hashes import HashCache


@pytest.fixture
def cache(tmp_path: Path) -> HashCache:
    return HashCache(tmp_path / "state" / "verify-cache.json")


def flip_last_byte_keeping_mtime(file: Path) -> None:
    """Damage a file the way a bad disk does: same size, same mtime, different content."""
    real = Path(os.path.realpath(file))
    before = real.stat()
    data = bytearray(real.read_bytes())
    data[-1] ^= 0xFF
    real.write_bytes(bytes(data))
    os.utime(real, ns=(before.st_atime_ns, before.st_mtime_ns))


class CountingOpener:
    """The real file, with the bytes read through it counted."""

    def __init__(self) -> None:
        self.read = 0

    def __call__(self, path: Path) -> io.RawIOBase:
        opener = self

        class Counted(io.FileIO):
            def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
                count = super().readinto(buffer)
                opener.read += count or 0
                return count

        return Counted(path, "rb")


# Git LFS pointers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["model-00002-of-00004.safetensors", "pytorch_model.bin", "consolidated.pt", "model-q4.gguf"]
)
def test_a_git_lfs_pointer_in_place_of_weights_is_named_as_such(tmp_path: Path, name: str) -> None:
    files = model_files()
    files[name] = lfs_pointer(b"the real weights" * 1000)
    model = write_dir(tmp_path / "m", files)
    size = len(files[name])
    with pytest.raises(ModelSourceError) as caught:
        verify_model_dir(model)
    assert caught.value.message == (
        f"{name} is a Git LFS pointer ({size} B): the weights were never fetched; run git lfs pull"
    )
    assert "git lfs pull" in caught.value.hint and str(model) in caught.value.hint


def test_a_pointer_for_one_shard_of_a_sharded_model_is_named(tmp_path: Path) -> None:
    files = model_files(shards=4)
    files["model-00002-of-00004.safetensors"] = lfs_pointer(files["model-00002-of-00004.safetensors"])
    model = write_dir(tmp_path / "m", files)
    with pytest.raises(ModelSourceError, match=r"^model-00002-of-00004.safetensors is a Git LFS pointer \(1\d\d B\)"):
        verify_model_dir(model)


def test_a_small_real_weight_file_is_not_mistaken_for_a_pointer(tmp_path: Path) -> None:
    files = model_files()
    files["pytorch_model.bin"] = b"PK\x03\x04" + b"\0" * 60  # a tiny torch zip
    verified = verify_model_dir(write_dir(tmp_path / "m", files))
    assert verified.weight_files == 2


# Layout -----------------------------------------------------------------------------------------


def test_a_missing_shard_is_named_with_the_index(tmp_path: Path) -> None:
    files = model_files(shards=4)
    del files["model-00003-of-00004.safetensors"]
    model = write_dir(tmp_path / "m", files)
    with pytest.raises(ModelNotFound) as caught:
        verify_model_dir(model)
    assert "lists 4 weight shards, 1 missing: model-00003-of-00004.safetensors" in caught.value.message


def test_a_shard_whose_offsets_run_past_the_end_is_reported(tmp_path: Path) -> None:
    files = model_files(shards=2)
    files["model-00002-of-00002.safetensors"] = safetensors_bytes({"layer2": 64}, data_bytes=40)
    model = write_dir(tmp_path / "m", files)
    with pytest.raises(ModelSourceError) as caught:
        verify_model_dir(model)
    assert "model-00002-of-00002.safetensors is corrupt or truncated" in caught.value.message
    assert "declares 64 bytes of tensor data but the file holds 40" in caught.value.message


def test_a_shard_with_an_unreadable_header_is_reported(tmp_path: Path) -> None:
    files = model_files()
    files["model.safetensors"] = (20).to_bytes(8, "little") + b"not json at all!!!!!" + b"\0" * 8
    with pytest.raises(ModelSourceError, match="its header is not valid JSON"):
        verify_model_dir(write_dir(tmp_path / "m", files))


def test_a_complete_directory_passes_with_a_summary(tmp_path: Path, cache: HashCache) -> None:
    model = write_dir(tmp_path / "m", model_files(shards=3))
    verified = verify_model_dir(model, cache=cache)
    assert verified.path == model and verified.weight_files == 3 and verified.checksums == 0
    assert verified.summary.startswith("3 weight files, ")
    assert cache.verified(model)


# Checksums --------------------------------------------------------------------------------------


def test_sha256sums_are_all_checked_and_a_mismatch_names_file_expected_and_actual(
    tmp_path: Path, cache: HashCache
) -> None:
    model = write_dir(tmp_path / "m", model_files(shards=2))
    sha256sums(model)
    assert verify_model_dir(model, cache=cache).checksums == 6  # config, 2 tokenizer files, index, 2 shards
    shard = model / "model-00002-of-00002.safetensors"
    expected = next(line.split()[0] for line in (model / "SHA256SUMS").read_text().splitlines() if shard.name in line)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, same header: only the checksum can tell
    shard.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ModelSourceError) as caught:
        verify_model_dir(model, cache=cache)
    assert caught.value.message == (
        f"model-00002-of-00002.safetensors: sha256 mismatch: expected {expected} (SHA256SUMS), actual {actual}"
    )
    assert not cache.verified(model)


def test_a_file_listed_in_sha256sums_but_missing_is_named(tmp_path: Path) -> None:
    model = write_dir(tmp_path / "m", model_files())
    sha256sums(model)
    (model / "tokenizer_config.json").unlink()
    with pytest.raises(ModelNotFound, match=r"tokenizer_config.json is listed in .*SHA256SUMS but missing"):
        verify_model_dir(model)


def test_a_malformed_sha256sums_line_is_named_with_its_line_number(tmp_path: Path) -> None:
    model = write_dir(tmp_path / "m", model_files())
    (model / "SHA256SUMS").write_text("# sums\nabc123  model.safetensors\n")
    with pytest.raises(ModelSourceError, match=r"SHA256SUMS:2: not a sha256sum line"):
        verify_model_dir(model)


def test_hf_cache_blob_names_are_checked_for_lfs_and_git_files(tmp_path: Path, cache: HashCache) -> None:
    snapshot = hf_cache_model(tmp_path / "hub", "acme/tiny", model_files(shards=2))
    verified = verify_model_dir(snapshot, cache=cache)
    assert verified.checksums == 6 and verified.hashed == 6  # 2 shards by sha256, 4 small files by git sha1
    blob = Path(os.path.realpath(snapshot / "model-00001-of-00002.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError) as caught:
        verify_model_dir(snapshot, cache=cache)
    assert caught.value.message.startswith(
        f"model-00001-of-00002.safetensors: sha256 mismatch: expected {blob.name} "
        "(its Hugging Face cache blob name), actual "
    )


def test_a_small_file_that_differs_from_its_git_blob_name_is_caught(tmp_path: Path) -> None:
    snapshot = hf_cache_model(tmp_path / "hub", "acme/tiny", model_files())
    blob = Path(os.path.realpath(snapshot / "config.json"))
    blob.write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(ModelSourceError, match=r"^config.json: git blob sha1 mismatch: expected "):
        verify_model_dir(snapshot)


def test_a_small_file_named_by_its_plain_sha1_passes_as_some_mirrors_name_it(tmp_path: Path) -> None:
    snapshot = hf_cache_model(tmp_path / "hub", "acme/tiny", model_files())
    blob = Path(os.path.realpath(snapshot / "config.json"))
    renamed = blob.with_name(hashlib.sha1(blob.read_bytes()).hexdigest())
    blob.rename(renamed)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(Path("../../blobs") / renamed.name)
    assert verify_model_dir(snapshot).checksums == 4
    renamed.write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(ModelSourceError, match=r"^config.json: git blob sha1 mismatch"):
        verify_model_dir(snapshot)


def test_blob_names_that_are_not_digests_are_not_checksums(tmp_path: Path) -> None:
    model = write_dir(tmp_path / "blobs-elsewhere" / "blobs", {})
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    for name, data in model_files().items():
        (model / f"blob-{name}").write_bytes(data)
        (snapshot / name).symlink_to(model / f"blob-{name}")
    assert verify_model_dir(snapshot).checksums == 0


# The hash cache ---------------------------------------------------------------------------------


def test_a_second_verify_reads_no_weight_bytes(tmp_path: Path, cache: HashCache) -> None:
    model = write_dir(tmp_path / "m", model_files(shards=3, shard_bytes=4096))
    sha256sums(model)
    first = verify_model_dir(model, cache=cache)
    assert first.hashed == 7 and first.cached == 0
    # A new process: a fresh cache object reading the same file, and a reader that counts bytes.
    from vllm_agent_plugins.verify_hashes import check_checksums, expected_checksums

    opener = CountingOpener()
    again = check_checksums(expected_checksums(model), HashCache(cache.file), opener=opener)
    assert (again.hashed, again.cached, opener.read) == (0, 7, 0)
    forced = check_checksums(expected_checksums(model), HashCache(cache.file), opener=opener, force=True)
    everything = sum(file.stat().st_size for file in model.iterdir() if file.name != "SHA256SUMS")
    assert forced.hashed == 7 and opener.read == everything


def test_a_cached_verify_trusts_an_unchanged_file_and_force_or_a_new_mtime_catches_it(
    tmp_path: Path, cache: HashCache
) -> None:
    model = write_dir(tmp_path / "m", model_files(shards=2))
    sha256sums(model)
    verify_model_dir(model, cache=cache)
    shard = model / "model-00001-of-00002.safetensors"
    flip_last_byte_keeping_mtime(shard)
    # Same size and mtime: the cache vouches for it (that is the point of the cache) ...
    assert verify_model_dir(model, cache=HashCache(cache.file)).cached == 6
    # ... --force reads it again ...
    with pytest.raises(ModelSourceError, match="model-00001-of-00002.safetensors: sha256 mismatch"):
        verify_model_dir(model, cache=HashCache(cache.file), force=True)
    assert not HashCache(cache.file).verified(model)  # the failure is on record, not the earlier pass
    # ... and so does any change of mtime (a copy, an edit, a restore).
    os.utime(shard)
    with pytest.raises(ModelSourceError, match="model-00001-of-00002.safetensors: sha256 mismatch"):
        verify_model_dir(model, cache=HashCache(cache.file))


def test_a_damaged_hash_cache_is_ignored_and_rebuilt(tmp_path: Path, cache: HashCache) -> None:
    model = write_dir(tmp_path / "m", model_files())
    sha256sums(model)
    cache.file.parent.mkdir(parents=True)
    cache.file.write_text('{"files": {"/x": ')
    verified = verify_model_dir(model, cache=cache)
    assert verified.hashed == 4
    data = json.loads(cache.file.read_text())
    assert str(model / "model.safetensors") in data["files"] and str(model) in data["dirs"]
    assert verify_model_dir(model, cache=HashCache(cache.file)).cached == 4


def test_a_read_only_cache_location_costs_only_the_cache(tmp_path: Path) -> None:
    model = write_dir(tmp_path / "m", model_files())
    sha256sums(model)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    verified = verify_model_dir(model, cache=HashCache(blocker / "verify-cache.json"))
    assert verified.checksums == 4


def test_hashing_reports_progress_in_bytes_and_files(tmp_path: Path) -> None:
    model = write_dir(tmp_path / "m", model_files(shards=2, shard_bytes=2048))
    sha256sums(model)
    lines: list[str] = []
    verify_model_dir(model, progress=lines.append)
    assert lines[0].startswith("verifying checksums: 0/") and lines[0].endswith("0/6 files")
    assert "6/6 files" in lines[-1]
