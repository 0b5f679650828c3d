"""``expt rerun`` and browsing runs (``runs``, ``show``, ``compare``): logged runs read back, untrusted."""
