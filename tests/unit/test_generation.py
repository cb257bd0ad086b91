"""`tspin_trl/generation.py`: the chunk store of checkpointed generation."""

from tspin_trl.generation import ChunkStore


def test_chunks_and_manifest_are_checksummed_and_validated(tmp_path):
    chunks = [[0, 1], [2, 3]]
    store = ChunkStore(str(tmp_path), "key", vocab_size=10)
    assert store.load(chunks) == {}
    store.write(0, [(0, [1, 2]), (1, [3])])
    store.write(1, [(2, [4]), (3, [5, 6])])
    assert sorted(ChunkStore(str(tmp_path), "key", 10).load(chunks)) == [0, 1]
    # a forged chunk of the right length: its checksum no longer matches the manifest
    (tmp_path / "chunk_00001.jsonl").write_text("[2, []]\n[3, []]\n")
    assert sorted(ChunkStore(str(tmp_path), "key", 10).load(chunks)) == [0]
    # garbage in the manifest: every chunk is discarded, nothing crashes
    (tmp_path / "manifest.json").write_text("{not json")
    assert ChunkStore(str(tmp_path), "key", 10).load(chunks) == {}
    # ids outside the vocabulary, with a matching checksum
    store = ChunkStore(str(tmp_path), "key", 10)
    store.load(chunks)
    store.write(0, [(0, [99]), (1, [3])])
    assert ChunkStore(str(tmp_path), "key", 10).load(chunks) == {}
