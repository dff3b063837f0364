raise AssertionError("a .disabled package must never be imported")
