"""JSON-RPC 2.0 dispatch: request bytes in, response bytes out, with ``jsonrpcserver``.

The usual message (one call of a known method, named params, an id — alone or as VDSM's
batch of one) is answered directly, the way the library would; everything else (batches, notifications, malformed or unknown
calls) goes through the library's own pipeline.

Owns: JSON decoding/encoding (orjson), the JSON-RPC envelope check, schema validation of
parameters, the recovery gate (99 while the daemon adopts its VMs), running each verb (on the
loop when it is a coroutine, on the worker pool with a timeout otherwise) and the single
place where :class:`~vdsm_py.errors.VdsmError` becomes a JSON-RPC error object. Unexpected
exceptions are logged with their traceback and reach the client as 100 without one.

It knows nothing of STOMP or TLS: the transport hands it a body and a :class:`CallContext`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from jsonrpcserver import Success
from jsonrpcserver.async_dispatcher import dispatch_request
from jsonrpcserver.dispatcher import (
    create_request,
    deserialize_request,
    not_notification,
    to_response,
)
from jsonrpcserver.exceptions import JsonRpcError
from jsonrpcserver.response import InvalidRequestResponse, to_serializable_one
from jsonrpcserver.sentinels import NODATA
from oslash.either import Left  # type: ignore[import-untyped]

from vdsm_py.errors import RecoveryInProgress, VdsmError
from vdsm_py.executor import Executor
from vdsm_py.rpc.schema import Schema, Verb

log = logging.getLogger("vdsm_py.rpc")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: filled in by the transport for every request."""

    client_id: str
    peer: str = ""
    peer_subject: str = ""
    flow_id: str | None = None


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "current_call", default=None
)


class InvalidRequest(ValueError):
    pass


def check_envelope(request: Any) -> Any:
    """Cheap structural check of a JSON-RPC request or batch (jsonrpcserver's validator).

    Replaces the library's jsonschema-based default, which costs more than the rest of a
    ping round trip.
    """
    items = request if isinstance(request, list) else [request]
    if not items:
        raise InvalidRequest("empty batch")
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequest("request is not an object")
        if item.get("jsonrpc") != "2.0":
            raise InvalidRequest("jsonrpc must be '2.0'")
        if not isinstance(item.get("method"), str):
            raise InvalidRequest("method must be a string")
        if "params" in item and not isinstance(item["params"], (dict, list)):
            raise InvalidRequest("params must be an object or array")
        if "id" in item and not isinstance(item["id"], (str, int, type(None))):
            raise InvalidRequest("id must be a string, number or null")
    return request


Handler = Callable[..., Any]

_NO_PARAMS: dict[str, Any] = {}

_HANDLER_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
        inspect.Parameter("params", inspect.Parameter.VAR_KEYWORD),
    ]
)


class Dispatcher:
    """Routes ``Namespace.verb`` calls to the objects registered for each namespace.

    A namespace implementation is any object with one method per schema verb, named in
    snake_case (``Host.getStats`` → ``get_stats``) and taking snake_case keyword arguments.
    Coroutine methods run on the loop (they must not block); plain methods run on the
    worker pool under ``call_timeout``.
    """

    def __init__(self, schema: Schema, executor: Executor, *, call_timeout: float = 60.0):
        self.schema = schema
        self.executor = executor
        self.call_timeout = call_timeout
        self.recovering = False
        self._methods: dict[str, Handler] = {}
        self._activity: list[Callable[[CallContext], None]] = []

    def register(self, namespace: str, impl: object) -> list[str]:
        """Bind the verbs of ``namespace`` that ``impl`` implements; return their names.

        A namespace may be served by several objects (``Host`` verbs of the host itself
        and of virt); :meth:`check_complete` then proves every schema verb is bound.
        """
        ns = self.schema.namespaces.get(namespace)
        if ns is None:
            raise ValueError(f"namespace {namespace} is not in the schema")
        bound = []
        for verb in ns.verbs.values():
            fn = getattr(impl, verb.py_name, None)
            if fn is None:
                continue
            if verb.method in self._methods:
                raise ValueError(f"{verb.method} is bound twice")
            self._methods[verb.method] = self._make_handler(verb, fn)
            bound.append(verb.method)
        if not bound:
            raise ValueError(f"{type(impl).__name__} implements no verb of {namespace}")
        return bound

    def check_complete(self) -> None:
        """Fail loudly if a schema verb has no implementation (a wiring bug)."""
        missing = [v.method for v in self.schema.verbs() if v.method not in self._methods]
        if missing:
            raise ValueError(f"schema verbs without implementation: {', '.join(missing)}")

    def on_activity(self, callback: Callable[[CallContext], None]) -> None:
        """Call ``callback`` for every request a client makes (connectivity checks)."""
        self._activity.append(callback)

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    async def handle(self, body: bytes | str, ctx: CallContext) -> bytes | None:
        """Answer one JSON-RPC message; ``None`` when it held only notifications."""
        for callback in self._activity:
            callback(ctx)
        try:
            single = orjson.loads(body)
        except orjson.JSONDecodeError:
            single = None
        if type(single) is list and len(single) == 1:
            single = single[0]  # VDSM's usual batch of one: answered as one object
        if type(single) is dict:
            answer = await self._call_one(single, ctx)
            if answer is not None:
                return answer
        # jsonrpcserver's own pipeline (deserialize -> validate -> dispatch_request ->
        # to_response), driven here so that VDSM's usual batch of one is awaited directly:
        # the library's dispatch_to_response wraps every request in asyncio.gather, which
        # costs more than the rest of a ping round trip.
        parsed = deserialize_request(orjson.loads, body)  # type: ignore[arg-type]
        if isinstance(parsed, Left):  # parse error
            return orjson.dumps(to_serializable_one(parsed))
        request = parsed._value
        try:
            check_envelope(request)
        except InvalidRequest as exc:
            # The library's validate_request would answer only "failed schema validation";
            # say what is wrong.
            return orjson.dumps(to_serializable_one(Left(InvalidRequestResponse(str(exc)))))
        items = request if isinstance(request, list) else [request]
        if len(items) == 1:
            results = [await dispatch_request(self._methods, ctx, create_request(items[0]))]
        else:
            results = await asyncio.gather(
                *(dispatch_request(self._methods, ctx, create_request(i)) for i in items)
            )
        responses = [
            to_serializable_one(to_response(req, result))
            for req, result in results
            if not_notification((req, result))
        ]
        if not responses:
            return None
        # As VDSM: one response is an object, even when it answers a batch.
        return orjson.dumps(responses[0] if len(responses) == 1 else responses)

    async def _call_one(self, request: dict[str, Any], ctx: CallContext) -> bytes | None:
        """The usual message — one call of a known method with named params and an id —
        answered as jsonrpcserver would, without its generic machinery (which costs more
        than the rest of the dispatch); None for anything else, left to the library."""
        handler = self._methods.get(request.get("method"))  # type: ignore[arg-type]
        params = request.get("params", _NO_PARAMS)
        if (handler is None or "id" not in request or request.get("jsonrpc") != "2.0"
                or type(params) is not dict or "ctx" in params):
            return None
        request_id = request["id"]
        if not isinstance(request_id, (str, int, type(None))):
            return None
        try:
            result = await handler(ctx, **params)
        except JsonRpcError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not NODATA:
                error["data"] = exc.data
            return orjson.dumps({"jsonrpc": "2.0", "error": error, "id": request_id})
        return orjson.dumps({"jsonrpc": "2.0", "result": result._value.result, "id": request_id})

    def _make_handler(self, verb: Verb, fn: Callable[..., Any]) -> Handler:
        schema = self.schema
        is_async = inspect.iscoroutinefunction(fn)
        method = verb.method

        async def handler(ctx: CallContext, *args: Any, **params: Any) -> Any:
            if args:
                raise JsonRpcError(-32602, "Invalid params", "parameters must be named")
            token = current_call.set(ctx)
            try:
                if self.recovering and not verb.available_during_recovery:
                    raise RecoveryInProgress()
                kwargs = schema.validate_params(verb, params)
                if is_async:
                    result = await fn(**kwargs)
                else:
                    result = await self.executor.run(
                        fn, timeout=self.call_timeout, name=method, **kwargs
                    )
                return Success(result)
            except VdsmError as exc:
                log.info("%s failed (flow %s): %s %s", method, ctx.flow_id, exc.code, exc)
                raise JsonRpcError(exc.code, exc.message) from None
            except (asyncio.CancelledError, JsonRpcError):
                raise
            except Exception:
                log.exception("unexpected error in %s (flow %s)", method, ctx.flow_id)
                raise JsonRpcError(
                    100, f"General Exception: unexpected error in {method}, see the host log"
                ) from None
            finally:
                current_call.reset(token)

        handler.__name__ = method
        # jsonrpcserver checks the arguments with inspect.signature on every call; a
        # precomputed signature makes that a lookup (the schema does the real checking).
        handler.__signature__ = _HANDLER_SIGNATURE  # type: ignore[attr-defined]
        return handler
