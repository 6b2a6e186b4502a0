"""CsvExampleGen for one span or a span range, with or without ExampleGen's driver.

resolve.py    span / span-range resolution through TFX's own FileBasedInputProcessor
driver.py     SpanRangeDriver: LocalDagRunner resolves the range before the cache lookup
executor.py   Executor: resolves what no driver resolved (open-source KFP, Vertex's stock
              driver hook) and reads every span of a range in one Beam job
component.py  CsvExampleGen subclass for a span range (stock node id CsvExampleGen)
"""
