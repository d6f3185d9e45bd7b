"""What IT sees of the running node: health, Prometheus metrics and the status page, served on
an HTTP port of its own (``[http]``), apart from the DICOM port."""
