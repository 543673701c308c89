"""Reports over run and sweep dirs: an offline HTML page (matplotlib) and a W&B report."""
