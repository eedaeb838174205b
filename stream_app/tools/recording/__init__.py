"""Recording files: Kafka topics on disk and back (format in :mod:`.format`)."""

from stream_app.tools.recording.format import RecordedRecord, RecordingError, parse_time
from stream_app.tools.recording.reader import RecordingReader, iter_recorded_events, read_recording
from stream_app.tools.recording.recorder import RecordSummary, record
from stream_app.tools.recording.writer import RecordingWriter

__all__ = [
    "RecordSummary", "RecordedRecord", "RecordingError", "RecordingReader", "RecordingWriter",
    "iter_recorded_events", "parse_time", "read_recording", "record",
]
