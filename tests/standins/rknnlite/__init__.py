"""Stand-in for rknn-toolkit-lite2 (tests only): see tests/standins/README.md."""
