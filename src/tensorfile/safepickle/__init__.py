"""The one pickle machine for foreign pickles (read) and the small pickle writer (torch files)."""
