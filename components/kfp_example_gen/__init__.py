"""CsvExampleGen executor for open-source KFP, which never runs ExampleGen's driver."""
