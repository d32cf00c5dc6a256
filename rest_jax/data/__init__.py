"""Translation data for rest_jax: the shipped Ding corpus, seqio tasks and numpy loading.

Modules (import the one you need; none is imported here, so that `import rest_jax.data.<x>`
stays cheap for modules that do not need TensorFlow):

  tsv        reading source<TAB>reference files with a report of malformed lines
  vocab      vocabularies by spec ("ding", "byte", a SentencePiece path)
  ding_tfds  the TFDS builder `ding_de_en` over rest_jax/data/ding/*.tsv.gz
  tasks      seqio Tasks (registered on import) and the functions that register more
  pipeline   `load_examples` / `pad_batch`: numpy examples for the ReST loop
"""
