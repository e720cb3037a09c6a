"""The relay: route a Messages request to a channel, fail over, stream back, settle.

Reads top to bottom: check the model -> pick candidates -> send -> (fail
over) -> respond -> settle. Failover happens only before the first byte
reaches the client. Every request that reaches routing is settled exactly
once, however it ends.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Mapping

from ..adaptors.anthropic import AnthropicAdaptor
from ..adaptors.base import Adaptor, estimate_missing_usage
from ..channel_types import channel_type
from ..db import release as release_db
from ..errors import InvalidRequest, NotFound, error_body, error_type_for
from ..metrics import STREAMS
from ..models import utcnow
from ..upstream.transport import TransportError, UpstreamResponse
from ..wire.sse import frame
from ..wire.usage import estimate_input_tokens, estimate_tokens
from .accounting import Ledger, RequestRecord
from .affinity import Affinity
from .auth import KeySnapshot
from .journal import worker_id
from .limiter import Admission, Estimate, Limiter
from .probe import probe_channel
from .replies import (
    STOPPING_MESSAGE,
    PrimedStream,
    Reply,
    answered_json,
    anthropic_error,
    as_event_stream,
    credentials_refused,
    error_type_of,
    header,
    json_headers,
    stopping_reply,
    stream_headers,
    transport_reply,
    upstream_text,
    with_request_id,
)
from .reservations import unpriced_channels, worst_case
from .routing import ChannelConfig, ChannelDirectory, home_first

log = logging.getLogger("octorelay.relay")

COUNTS_TOKENS = "count_tokens"  # _open(..., formats=COUNTS_TOKENS): only types whose upstream counts
TOO_DEEP_TO_REENCODE = "request body is nested too deeply to be re-encoded for this channel"


def retryable(status: int) -> bool:
    """Worth another channel: the channel's key is bad (401/403), it is limited (429) or broken."""
    return status in (401, 403, 429) or status >= 500


@dataclass
class RelayCall:
    request_id: str
    key: KeySnapshot
    body: dict
    raw: bytes
    headers: Mapping
    count_tokens: bool = False
    skip_channels: frozenset = frozenset()  # channels this call must not use (their model is unpriced)
    admitted: Admission | None = None  # what the key was admitted for before its body was read (client.py)
    recorded: bool = False  # the relay took charge of its log row (refusals before that: services/refusals.py)

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True and not self.count_tokens


@dataclass
class _Opened:
    channel: ChannelConfig
    adaptor: Adaptor
    upstream: UpstreamResponse


@dataclass
class Relay:
    directory: ChannelDirectory
    ledger: Ledger
    transports: dict
    limiter: Limiter
    max_attempts: int = 3
    count_tokens_rpm: int = 600  # per key (OCTORELAY_COUNT_TOKENS_RPM)
    server_tool_reserve_nanos: int = 250_000_000  # OCTORELAY_SERVER_TOOL_RESERVE_USD, per request
    journal: bool = True  # OCTORELAY_JOURNAL=0 turns it off (README, When things break)
    on_settled: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    affinity: Affinity = field(default_factory=Affinity)
    stopping: bool = field(default=False, init=False)  # set once, by stop_upstreams()
    _in_flight: dict = field(default_factory=dict, init=False, repr=False)  # id -> unsettled record

    def __post_init__(self) -> None:
        # the writer records turns routed without a lookup through whatever affinity the relay has now
        self.ledger.record_affinity = lambda turns: self.affinity.record(turns)

    # entry points -------------------------------------------------------------

    def admit_before_body(self, key: KeySnapshot, count_tokens: bool = False) -> Admission:
        """What the key's limits refuse before its body is read and parsed (issue 22): a key over
        its budget, rpm or concurrency never makes this worker read its body. count_tokens calls
        are free and only rate-limited (OCTORELAY_COUNT_TOKENS_RPM)."""
        if count_tokens:
            self.limiter.admit_free(key, "count_tokens", self.count_tokens_rpm)
            return Admission(key)
        return self.limiter.admit_before_body(key)

    def abandon(self, admission: Admission | None) -> None:
        """A call that ends before it is settled (a bad body, a refused model) gives back what it
        was admitted for; a settled one is left alone, and one never admitted holds nothing."""
        if admission is not None:
            self.limiter.abandon(admission)

    def probe(self, channel_id: int) -> dict:
        """The admin's channel test: one minimal request through that channel (services/probe.py)."""
        return probe_channel(channel_id, self.directory, self.transports)

    def messages(self, call: RelayCall) -> Reply:
        call.key.check_model(call.model)
        candidates = self.directory.candidates(call.model)  # one ordered list serves the whole request
        self._refuse_unpriced(call, candidates)
        estimate = self._worst_case(call, candidates)
        admission = self.limiter.admit(call.key, estimate, call.admitted)
        release_db()  # a budgeted key's fresh totals were just read: hold the connection no longer
        record = RequestRecord(call.request_id, call.key.id, call.model, call.stream)
        call.recorded = True
        if self.journal:  # survives this process (journal.py)
            self.ledger.journal(record, estimate.cost_nanos, worker_id())
        self._in_flight[id(record)] = record
        try:
            opened = self._open(call, record, candidates)
            if isinstance(opened, Reply):
                reply = self._finish_error(record, admission, opened)
            elif call.stream and answered_json(opened.upstream):  # a message where events were asked for
                reply = self._complete(record, admission, opened, as_events=True, request=call.body)
            elif call.stream:
                reply = Reply(200, stream_headers(opened.upstream),
                              PrimedStream(self._stream(record, admission, opened, call.body)))
            else:
                reply = self._complete(record, admission, opened, request=call.body)
        except Exception as exc:
            if not record.settled:  # no channel, or our own fault: still leave a row
                record.status = getattr(exc, "status", 500)
                record.error_type = getattr(exc, "error_type", "api_error")
                self._settle(record, admission)
            raise
        reply.headers.update(admission.headers)
        return reply

    def _refuse_unpriced(self, call: RelayCall, candidates: list[ChannelConfig]) -> None:
        call.skip_channels = unpriced_channels(call.key, call.model, candidates, self.ledger.prices)

    def _worst_case(self, call: RelayCall, candidates: list[ChannelConfig]) -> Estimate:
        return worst_case(call.key, call.model, len(call.raw), call.body, candidates,
                          self.ledger.prices, self.server_tool_reserve_nanos)

    def count_tokens(self, call: RelayCall) -> Reply:
        """Free and frequent (Claude Code calls it constantly): relayed, never billed or logged,
        but limited per key, and its failures never cool a channel down (an upstream 429 here
        says nothing about the channel's Messages capacity).

        A model only channels without an upstream count serve (the registry says which)
        gets a local estimate, since Claude Code's context management breaks on a 404 here.
        """
        call.key.check_model(call.model)
        if call.admitted is None:  # else admitted before its body was read
            self.limiter.admit_free(call.key, "count_tokens", self.count_tokens_rpm)
        record = RequestRecord(call.request_id, call.key.id, call.model, False)
        candidates = self.directory.candidates(call.model)
        routable = [c for c in candidates if self._routable(c, None)]
        if routable and not any(self._routable(c, COUNTS_TOKENS) for c in routable):
            body = json.dumps({"input_tokens": estimate_input_tokens(call.body)}).encode()
            return Reply(200, {"content-type": "application/json"}, body)
        opened = self._open(call, record, candidates, formats=COUNTS_TOKENS)
        if isinstance(opened, Reply):
            if opened.status in (400, 404) and _estimates_on_refusal(routable, record.channel_id):
                body = json.dumps({"input_tokens": estimate_input_tokens(call.body)}).encode()
                return Reply(200, {"content-type": "application/json"}, body)
            return opened
        try:
            body = opened.upstream.read()
        except TransportError as exc:
            return transport_reply(exc, call.request_id)
        finally:
            opened.upstream.close()
        body, _ = opened.adaptor.translate_response(body)  # a cloud's count in Anthropic's shape
        return Reply(opened.upstream.status, json_headers(opened.upstream), body)

    # routing and failover -----------------------------------------------------

    def _open(self, call: RelayCall, record: RequestRecord, ordered: list[ChannelConfig],
              formats=None) -> _Opened | Reply:
        candidates = [c for c in ordered if self._routable(c, formats) and c.id not in call.skip_channels]
        if not candidates:
            raise NotFound(f"no channel serves model {call.model!r}")
        # one candidate: nothing to choose, so the store is not asked now (the writer records the turn)
        conversation = None if call.count_tokens else self.affinity.lookup(
            call.key.id, call.model, call.headers, call.body, read=len(candidates) > 1)
        if conversation is not None and conversation.home is not None:
            candidates = home_first(candidates, conversation.home, utcnow())
        opened = self._try(call, record, candidates, formats)
        if conversation is not None and record.channel_id is not None and not (
                isinstance(opened, Reply) and retryable(opened.status)):
            record.affinity, record.affinity_pending = self.affinity.conclude(  # a client error keeps the home
                conversation, record.channel_id, moves=not isinstance(opened, Reply))
        return opened

    def _try(self, call: RelayCall, record: RequestRecord, candidates: list[ChannelConfig],
             formats) -> _Opened | Reply:
        last: Reply | None = None
        untranslatable: InvalidRequest | None = None
        attempts = 0
        for channel in candidates:
            if attempts >= self.max_attempts:
                break
            if self.stopping:
                return stopping_reply(call.request_id)
            kind = channel_type(channel.type)
            assert kind is not None  # _routable() kept registered types only
            adaptor = kind.adaptor
            target = channel.target(call.model)
            try:
                request = adaptor.build_request(target, call.body, call.raw, call.headers,
                                                count_tokens=call.count_tokens)
            except InvalidRequest as exc:  # this channel's format cannot carry the request
                untranslatable = exc
                continue
            except RecursionError:  # re-encoding (model_map, translation) nests deeper than parsing did
                untranslatable = InvalidRequest(TOO_DEEP_TO_REENCODE)
                continue
            attempts += 1
            record.attempts += 1
            record.channel_id, record.upstream_model = channel.id, target.model
            release_db()  # no database connection is held while the upstream thinks
            try:
                upstream = self.transports[channel.type].open(request)
            except TransportError as exc:
                if self.stopping:  # cut by stop_upstreams(): not the channel's fault, no failover
                    return stopping_reply(call.request_id)
                if not call.count_tokens:
                    self.directory.record_failure(channel, exc.kind)
                last = transport_reply(exc, call.request_id)
                continue
            if 200 <= upstream.status < 300:
                self.directory.record_success(channel)
                return _Opened(channel, adaptor, upstream)
            last = self._upstream_error(adaptor, upstream, call.request_id)
            if upstream.status in (401, 403):  # the channel's own key was refused, not the client's
                last = credentials_refused(channel, last, call.request_id)
            if not retryable(upstream.status):
                return last
            if not call.count_tokens:
                self.directory.record_failure(channel, f"http_{upstream.status}")
        if last is None:  # candidates is never empty (_open): each one refused the request's format
            assert untranslatable is not None
            raise untranslatable
        return last

    def _routable(self, channel: ChannelConfig, formats) -> bool:
        """A registered type with a transport; with formats=COUNTS_TOKENS, one that counts upstream."""
        kind = channel_type(channel.type)
        if kind is None or channel.type not in self.transports:
            return False
        return formats != COUNTS_TOKENS or kind.count_tokens

    def _upstream_error(self, adaptor, upstream: UpstreamResponse, request_id: str) -> Reply:
        try:
            raw = upstream.read()
        except TransportError:
            raw = b""
        finally:
            upstream.close()
        status, body = adaptor.translate_error(upstream.status, raw)
        headers = json_headers(upstream)
        if not anthropic_error(body):  # an nginx page, a gateway's own shape, nothing at all
            body = json.dumps(error_body(error_type_for(status), upstream_text(status, body),
                                         request_id)).encode()
            headers["content-type"] = "application/json"
        elif type(adaptor) is not AnthropicAdaptor:  # a translated body (Vertex too): give it our request id
            body = with_request_id(body, request_id)
        if "retry-after" in {k.lower() for k in upstream.headers}:
            headers["retry-after"] = header(upstream.headers, "retry-after")
        return Reply(status, headers, body, error_type_of(body, status))

    # answers --------------------------------------------------------------------

    def _finish_error(self, record: RequestRecord, admission: Admission, reply: Reply) -> Reply:
        record.status, record.error_type = reply.status, reply.error_type
        self._settle(record, admission)
        return reply

    def _complete(self, record: RequestRecord, admission: Admission, opened: _Opened,
                  as_events: bool = False, request: Mapping | None = None) -> Reply:
        """A whole answer; `as_events`: the client asked for a stream, so it gets the events
        Anthropic would have sent for this message (billed from its usage all the same)."""
        release_db()
        try:
            raw = opened.upstream.read()
        except TransportError as exc:
            if self.stopping:
                return self._finish_error(record, admission, stopping_reply(record.request_id))
            self.directory.record_failure(opened.channel, exc.kind)
            return self._finish_error(record, admission, transport_reply(exc, record.request_id))
        finally:
            opened.upstream.close()
        body, usage = opened.adaptor.translate_response(raw)
        if usage.total == 0 and request is not None and not isinstance(opened.adaptor, AnthropicAdaptor):
            # a translated answer without any usage: estimated, never billed as free (an anthropic
            # channel's body is passed through byte for byte, as it came)
            body, usage = estimate_missing_usage(body, request)
            record.usage_estimated = True
        record.usage = usage
        record.status = opened.upstream.status
        record.ttft_ms = _ms_since(record.started)
        reply = Reply(opened.upstream.status, json_headers(opened.upstream), body)
        if as_events:
            reply = as_event_stream(reply, record)
        self._settle(record, admission)
        return reply

    def _stream(self, record: RequestRecord, admission: Admission, opened: _Opened,
                body: Mapping | None = None) -> Generator[bytes, None, None]:
        """Forward each chunk as it arrives; the finally settles on every ending."""
        translator = opened.adaptor.translate_stream(body)
        record.status = opened.upstream.status
        broken: TransportError | None = None
        cut = False  # ended by stop_upstreams() before the upstream finished
        STREAMS.inc()
        release_db()
        try:
            try:
                for chunk in opened.upstream.chunks():
                    self.limiter.keep_alive(admission)
                    out = translator.feed(chunk)
                    if out:
                        if record.ttft_ms is None:
                            record.ttft_ms = _ms_since(record.started)
                        yield out
                cut = self.stopping and not translator.usage_final
                tail = b"" if cut else translator.finish()
                if tail:
                    yield tail
            except TransportError as exc:
                broken = exc
                cut = self.stopping
            if cut:  # what Anthropic sends when it sheds load: the client may retry
                record.error_type = "overloaded_error"
                yield frame("error", error_body(record.error_type, STOPPING_MESSAGE, record.request_id))
            elif broken is not None:
                self.directory.record_failure(opened.channel, broken.kind)
                record.error_type = "timeout_error" if broken.kind == "timeout" else "api_error"
                yield frame("error", error_body(record.error_type, broken.message, record.request_id))
        except GeneratorExit:
            record.client_disconnected = True
            raise
        finally:
            STREAMS.dec()
            opened.upstream.close()
            usage = translator.usage
            if not translator.usage_final:
                usage.output_tokens = max(usage.output_tokens, estimate_tokens(translator.output_chars))
            record.usage = usage
            record.usage_estimated = not translator.usage_final  # some counts are ours, not the upstream's
            record.error_type = record.error_type or translator.error_type
            try:
                self._settle(record, admission)
            finally:  # record_failure above may have borrowed one, after the request's teardown
                release_db()

    # stopping -------------------------------------------------------------------

    def stop_upstreams(self) -> int:
        """A stopping worker's deadline: send nothing more upstream and end every upstream call
        in flight now. Open streams then end with an `overloaded_error` event, requests still
        waiting get a 503 `overloaded_error`; each is settled with the usage seen so far, as on a
        client disconnect. Returns how many requests were in flight."""
        self.stopping = True
        in_flight = len(self._in_flight)
        for transport in self.transports.values():
            abort = getattr(transport, "abort_all", None)
            if abort is not None:
                abort()
        return in_flight

    def in_flight(self) -> int:
        """Requests routed and not yet settled."""
        return len(self._in_flight)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every settlement queued so far is committed (or spooled); False on timeout."""
        return self.ledger.flush(timeout)

    def close(self) -> None:
        """Write what is queued, stop the writer, the sweeper and the watch of homes, and close the
        upstream connections (a worker's exit, the end of a test)."""
        self.ledger.close()
        self.affinity.close()
        for transport in {id(t): t for t in self.transports.values()}.values():  # types share one pool
            transport.close()

    def _metric_label(self, record: RequestRecord) -> str:
        """Bounded label values: a glob channel accepts any string a client sends. From the
        caches as they are: settling must never wait on (or fail with) the database."""
        model = record.model
        if any(c.names(model) for c in self.directory.cached()) or self.ledger.prices.cached().lookup(
                record.upstream_model or model) is not None:
            return model
        return "other"

    def _settle(self, record: RequestRecord, admission: Admission) -> None:
        """Exactly once per admitted request: free its slot now, queue its charge and log row;
        its budget reservation is given back once the charge is committed."""
        self._in_flight.pop(id(record), None)
        self.limiter.finish(admission, record.usage.total)
        record.metric_model = self._metric_label(record)

        def committed(cost_nanos: int) -> None:
            record.cost_nanos = cost_nanos
            self.limiter.release_reservations(admission)
            for hook in self.on_settled:
                try:
                    hook(record)
                except Exception:
                    log.exception("on_settled hook failed")

        self.ledger.settle(record, committed)


def _estimates_on_refusal(channels: list[ChannelConfig], channel_id: int | None) -> bool:
    """The channel that refused a count is of a type whose count exists only for some models or
    regions (the registry says so): the local estimate answers instead of an error."""
    kind = next((channel_type(c.type) for c in channels if c.id == channel_id), None)
    return kind is not None and kind.count_tokens_fallback


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
