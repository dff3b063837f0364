raise AssertionError("a folder without __init__.py is not a package and must never be imported")
