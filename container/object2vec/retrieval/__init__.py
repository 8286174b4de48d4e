"""Nearest-neighbour retrieval: the top-k candidates of a catalogue for a query, by the model's own score.

candidates (the catalogue's JSON Lines: {"id": ..., "in1": [ids]}, read and checked in blocks),
scoring (the search vector of a query, and the full pair score of query and candidate encodings),
vector_index (faiss: exact inner-product search or an IVF index, and how each is searched),
index_file (the one-file artifact model/retrieval.index: header, ids, faiss index; memory-mapped),
build (encode a catalogue with a trained model and write the index atomically),
retriever (load the index next to the model and answer top-k queries), protocol (the HTTP
parameters and the neighbour responses), cli (`python -m object2vec index`).
"""
