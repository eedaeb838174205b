"""Dataset adapters: public behaviour logs (and the project's recordings) ->
:class:`stream_app.core.events.Event`, streaming.

Every adapter reads line by line (gzip transparently), yields events in file order, and counts a
malformed line into a :class:`LoadReport` (with its reason) instead of raising: a line with too few
fields (a truncated line), a value that does not parse, or an implausible time (before 1995 or more
than a day after now, :data:`MIN_TS_MS` / :data:`MAX_FUTURE_MS`). Event ids are deterministic
(``"<kind>:<line number>"``), so loading the same file twice gives the same events. The format
mappings are documented in each module: :mod:`.movielens`, :mod:`.taobao`, :mod:`.diginetica`,
:mod:`.retailrocket`, :mod:`.yoochoose`, :mod:`.recording`.
"""

from stream_app.tools.datasets.base import MAX_FUTURE_MS, MIN_TS_MS, BadLine, LoadReport
from stream_app.tools.datasets.movielens import movielens_genres
from stream_app.tools.datasets.registry import FILE_KINDS, KINDS, READERS, detect_kind, read_dataset

__all__ = ["FILE_KINDS", "KINDS", "MAX_FUTURE_MS", "MIN_TS_MS", "READERS", "BadLine", "LoadReport",
           "detect_kind", "movielens_genres", "read_dataset"]
