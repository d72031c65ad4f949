"""Scans and time: video/DICOM/image-sequence sources (:mod:`.scan`), the ultrasound region
(:mod:`.region`), best-frame selection (:mod:`.select`) and real-time scoring (:mod:`.live`)."""
