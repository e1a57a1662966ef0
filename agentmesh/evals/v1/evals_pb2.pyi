import datetime

from agentmesh.options.v1 import options_pb2 as _options_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TraceUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class TraceToolCall(_message.Message):
    __slots__ = ("name", "arguments_json", "result", "decision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments_json: str
    result: str
    decision: str
    def __init__(self, name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., result: _Optional[str] = ..., decision: _Optional[str] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("trace_id", "session_id", "user_id", "input", "output", "model", "latency_ms", "usage", "tool_calls", "created_at")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    session_id: str
    user_id: str
    input: str
    output: str
    model: str
    latency_ms: int
    usage: TraceUsage
    tool_calls: _containers.RepeatedCompositeFieldContainer[TraceToolCall]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, trace_id: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., input: _Optional[str] = ..., output: _Optional[str] = ..., model: _Optional[str] = ..., latency_ms: _Optional[int] = ..., usage: _Optional[_Union[TraceUsage, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[TraceToolCall, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordTraceRequest(_message.Message):
    __slots__ = ("trace",)
    TRACE_FIELD_NUMBER: _ClassVar[int]
    trace: Trace
    def __init__(self, trace: _Optional[_Union[Trace, _Mapping]] = ...) -> None: ...

class RecordTraceResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class BatchRecordTracesRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecordTraceRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecordTraceRequest, _Mapping]]] = ...) -> None: ...

class BatchRecordTracesResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RecordTraceResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RecordTraceResponse, _Mapping]]] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "description", "direction", "threshold")
    class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DIRECTION_UNSPECIFIED: _ClassVar[Metric.Direction]
        DIRECTION_LOWER_IS_BETTER: _ClassVar[Metric.Direction]
        DIRECTION_HIGHER_IS_BETTER: _ClassVar[Metric.Direction]
    DIRECTION_UNSPECIFIED: Metric.Direction
    DIRECTION_LOWER_IS_BETTER: Metric.Direction
    DIRECTION_HIGHER_IS_BETTER: Metric.Direction
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    direction: Metric.Direction
    threshold: float
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., direction: _Optional[_Union[Metric.Direction, str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class ListMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    def __init__(self, metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ...) -> None: ...

class RunEvaluationRequest(_message.Message):
    __slots__ = ("metrics", "since", "limit", "session_id", "regrade")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REGRADE_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    since: _timestamp_pb2.Timestamp
    limit: int
    session_id: str
    regrade: bool
    def __init__(self, metrics: _Optional[_Iterable[str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., session_id: _Optional[str] = ..., regrade: _Optional[bool] = ...) -> None: ...

class EvaluationProgress(_message.Message):
    __slots__ = ("graded", "failed", "remaining", "trace_id", "metric")
    GRADED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    graded: int
    failed: int
    remaining: int
    trace_id: str
    metric: str
    def __init__(self, graded: _Optional[int] = ..., failed: _Optional[int] = ..., remaining: _Optional[int] = ..., trace_id: _Optional[str] = ..., metric: _Optional[str] = ...) -> None: ...

class WorstTrace(_message.Message):
    __slots__ = ("trace_id", "score", "reasoning")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    score: float
    reasoning: str
    def __init__(self, trace_id: _Optional[str] = ..., score: _Optional[float] = ..., reasoning: _Optional[str] = ...) -> None: ...

class MetricReport(_message.Message):
    __slots__ = ("metric", "count", "failed", "mean", "worst", "threshold_crossed")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    WORST_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_CROSSED_FIELD_NUMBER: _ClassVar[int]
    metric: str
    count: int
    failed: int
    mean: float
    worst: _containers.RepeatedCompositeFieldContainer[WorstTrace]
    threshold_crossed: bool
    def __init__(self, metric: _Optional[str] = ..., count: _Optional[int] = ..., failed: _Optional[int] = ..., mean: _Optional[float] = ..., worst: _Optional[_Iterable[_Union[WorstTrace, _Mapping]]] = ..., threshold_crossed: _Optional[bool] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("traces", "graded", "failed", "metrics")
    TRACES_FIELD_NUMBER: _ClassVar[int]
    GRADED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    traces: int
    graded: int
    failed: int
    metrics: _containers.RepeatedCompositeFieldContainer[MetricReport]
    def __init__(self, traces: _Optional[int] = ..., graded: _Optional[int] = ..., failed: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[MetricReport, _Mapping]]] = ...) -> None: ...

class RunEvaluationResponse(_message.Message):
    __slots__ = ("progress", "report")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    progress: EvaluationProgress
    report: EvaluationReport
    def __init__(self, progress: _Optional[_Union[EvaluationProgress, _Mapping]] = ..., report: _Optional[_Union[EvaluationReport, _Mapping]] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("trace_id", "metric", "score", "reasoning", "judge_model", "created_at", "session_id")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    metric: str
    score: float
    reasoning: str
    judge_model: str
    created_at: _timestamp_pb2.Timestamp
    session_id: str
    def __init__(self, trace_id: _Optional[str] = ..., metric: _Optional[str] = ..., score: _Optional[float] = ..., reasoning: _Optional[str] = ..., judge_model: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_id: _Optional[str] = ...) -> None: ...

class ListScoresRequest(_message.Message):
    __slots__ = ("metric", "trace_id", "session_id", "page_size", "page_token")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    metric: str
    trace_id: str
    session_id: str
    page_size: int
    page_token: str
    def __init__(self, metric: _Optional[str] = ..., trace_id: _Optional[str] = ..., session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListScoresResponse(_message.Message):
    __slots__ = ("scores", "next_page_token")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[Score]
    next_page_token: str
    def __init__(self, scores: _Optional[_Iterable[_Union[Score, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetMetricSummaryRequest(_message.Message):
    __slots__ = ("metric", "window")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    metric: str
    window: str
    def __init__(self, metric: _Optional[str] = ..., window: _Optional[str] = ...) -> None: ...

class GetMetricSummaryResponse(_message.Message):
    __slots__ = ("metric", "window", "count", "mean", "p50", "p90")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    P50_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    metric: str
    window: str
    count: int
    mean: float
    p50: float
    p90: float
    def __init__(self, metric: _Optional[str] = ..., window: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., p50: _Optional[float] = ..., p90: _Optional[float] = ...) -> None: ...

class EraseUserDataRequest(_message.Message):
    __slots__ = ("erasure_id", "user_id", "session_ids")
    ERASURE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    erasure_id: str
    user_id: str
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, erasure_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EraseUserDataResponse(_message.Message):
    __slots__ = ("counts",)
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.ScalarMap[str, int]
    def __init__(self, counts: _Optional[_Mapping[str, int]] = ...) -> None: ...
