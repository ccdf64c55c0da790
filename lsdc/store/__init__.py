"""store: the converted crop store, the contract between ``lsdc preprocess`` and every later stage.

layout.py    the contract: files, arrays, index columns, version (the README's "The store" says the same)
writer.py    ``assemble``: a store built from committed study parts (used by lsdc.preprocess); ``commit``:
             the store flushed to disk and its report written, the point from which it is complete
durable.py   fsync of a tree, durable atomic writes (what ``commit`` rests on)
reader.py    open and check a store, its crop spec, index tables and zarr arrays; ``open_view``
chunks.py    ``StoreReader``: the fast chunk-file reader (zarr-python fallback for other layouts)
reasons.py   ``Reason``: every skip/note reason a conversion can report
"""
