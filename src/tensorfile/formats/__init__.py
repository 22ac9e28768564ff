"""Readers and writers of every file format tensorfile handles, one module per format, and their registry."""
