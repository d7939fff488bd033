"""Running the house: one job from lock to notice (runner.py), the status commands' data
(monitor.py), notices (notify.py), crontab lines (crontab.py) and signals (interrupts.py)."""
