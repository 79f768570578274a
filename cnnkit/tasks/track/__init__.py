"""Multi-object tracking: detection per frame, linked across frames by ByteTrack or BOT-SORT."""
