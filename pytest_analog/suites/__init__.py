"""The built-in suites, one package each (`registry.BUILT_IN` lists them; `suite.Suite` says what each holds)."""
