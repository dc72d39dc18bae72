"""Stand-in for pycuda (tests only): see tests/standins/README.md."""
