raise AssertionError("a package whose name starts with '_' must never be imported")
