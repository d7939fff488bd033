"""The plain building blocks: addresses, dates, schedules, path templates, network errors in
our own words and the private working folder. They import nothing of ours but errors."""
