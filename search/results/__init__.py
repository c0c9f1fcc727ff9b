"""What a study found, read back: its trials as pandas frames, a leaderboard and a report (``compare``), and the
best trial's config and weights for ``stt train`` (``export``)."""
