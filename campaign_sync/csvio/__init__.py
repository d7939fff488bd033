"""Partner CSV in and out: read.py (dialects, encodings, broken files) and write.py (formula
neutralisation, gzip)."""
